"""``import basicsr`` on torchvision >= 0.17, without importing anything of ts-defense first.

BasicSR 1.4.2 (the release PyPI serves) imports ``torchvision.transforms.functional_tensor``,
a module torchvision renamed to ``_functional_tensor`` in 0.15 and removed in 0.17. The wheel of
ts-defense installs ``_ts_defense_torchvision.pth`` beside this module at the top of
site-packages; at interpreter start it runs :func:`install`, which appends :class:`Finder` to
``sys.meta_path`` and returns: nothing else is imported (no torch, no torchvision), and the
finder answers only for the old module's name, after every other finder has failed to find it.
Then, and only then, it hands out the renamed module under the old name. Where the old module
exists (torchvision < 0.17, or a fixed BasicSR never asks for it), the finder is never reached.

This is the one copy of the aliasing logic: ``ts_defense.adapters.basicsr`` calls :func:`alias`
too, for installs whose ``.pth`` never runs (``pip install --target``, a checkout on the path).
"""

import sys

OLD = "torchvision.transforms.functional_tensor"
NEW = "torchvision.transforms._functional_tensor"


class _Loader:
    """Puts the renamed module into ``sys.modules`` under the old name (the import system then
    returns whatever that entry holds: the renamed module, with its own ``__spec__``)."""

    @staticmethod
    def create_module(spec: object) -> None:
        return None

    @staticmethod
    def exec_module(module: object) -> None:
        import importlib

        sys.modules[OLD] = importlib.import_module(NEW)


class Finder:
    """A ``sys.meta_path`` finder that finds only ``OLD``, as an alias of ``NEW``."""

    @staticmethod
    def find_spec(fullname: str, path: object = None, target: object = None) -> object:
        if fullname != OLD:
            return None
        import importlib.util

        if importlib.util.find_spec(NEW) is None:  # neither name: a plain ModuleNotFoundError
            return None
        return importlib.util.spec_from_loader(OLD, _Loader)


def install() -> None:
    """Append :class:`Finder` to ``sys.meta_path`` (once); costs microseconds, imports nothing."""
    if Finder not in sys.meta_path:
        sys.meta_path.append(Finder)


def alias() -> bool:
    """Make ``OLD`` importable now; returns whether it is the alias (``False`` where the old
    module exists or was already imported, or torchvision is missing)."""
    if OLD in sys.modules:
        return False
    install()
    import importlib

    try:
        module = importlib.import_module(OLD)
    except ModuleNotFoundError:  # torchvision itself missing: nothing to fix here
        return False
    return module.__name__ == NEW
