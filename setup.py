"""The one thing ``pyproject.toml`` cannot say: a ``.pth`` file at the top of site-packages.

``_ts_defense_torchvision.pth`` makes ``import basicsr`` work on torchvision >= 0.17 without
importing ts-defense first (see ``_ts_defense_torchvision.py``). setuptools' ``data-files`` land
under the environment's prefix, not in site-packages, so ``build_py`` writes the line into the
build tree, whose top level becomes the wheel's (``purelib``) root, as setuptools ships its own
``distutils-precedence.pth``. Editable installs (``pip install -e``) take no generated files:
there ``import ts_defense.adapters.basicsr`` (BasicSR users' registration import) does the same.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "_ts_defense_torchvision.pth"
# site.py runs .pth lines that start with "import"; this one only appends a finder to
# sys.meta_path (microseconds, no torch/torchvision import).
PTH_LINE = "import _ts_defense_torchvision; _ts_defense_torchvision.install()\n"


class build_py_with_pth(build_py):  # noqa: N801 (setuptools' command naming)
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            with open(os.path.join(self.build_lib, PTH), "w") as f:
                f.write(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return [*outputs, os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": build_py_with_pth})
