"""The one thing ``pyproject.toml`` cannot say: a ``.pth`` file at the top of site-packages.

``_ts_defense_torchvision.pth`` makes ``import basicsr`` work on torchvision >= 0.17 without
importing ts-defense first (see ``_ts_defense_torchvision.py``). setuptools' ``data-files`` land
under the environment's prefix, not in site-packages, so ``build_py`` writes the line into the
build tree, whose top level becomes the wheel's (``purelib``) root, as setuptools ships its own
``distutils-precedence.pth``. An editable wheel (``pip install -e``) maps ``build_lib``'s files
back to their sources and drops generated ones, so there the line goes where ``editable_wheel``
points ``install_lib``: the wheel's own root (its ``.pth`` sorts after ``__editable__.*.pth``,
whose finder then imports ``_ts_defense_torchvision`` from the checkout).
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "_ts_defense_torchvision.pth"
# site.py runs .pth lines that start with "import"; this one only appends a finder to
# sys.meta_path (microseconds, no torch/torchvision import).
PTH_LINE = "import _ts_defense_torchvision; _ts_defense_torchvision.install()\n"


class build_py_with_pth(build_py):
    def run(self) -> None:
        super().run()
        # An editable wheel takes build_lib's files from their sources (not this generated
        # one), but everything under install_lib, which editable_wheel points at the wheel.
        folder = self.build_lib
        if self.editable_mode:
            folder = self.get_finalized_command("install").install_lib
        if folder:
            with open(os.path.join(folder, PTH), "w") as f:
                f.write(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return [*outputs, os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": build_py_with_pth})
