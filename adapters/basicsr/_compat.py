"""Make ``import basicsr`` work with torchvision >= 0.17, and read its option files safely.

BasicSR 1.4.2 (the release PyPI serves) imports ``torchvision.transforms.functional_tensor``,
a module torchvision renamed to ``_functional_tensor`` in 0.15 and removed in 0.17; since
``basicsr/__init__`` imports every submodule, the whole package fails to import. Before BasicSR
is imported we register the renamed module under the old name — only when the old name is
missing, so a fixed BasicSR or an older torchvision sees no change. Installed from the wheel,
the same finder (:mod:`_ts_defense_torchvision`) already runs from a ``.pth`` file at interpreter
start, so ``import basicsr`` works without importing this package first.

BasicSR parses option files with PyYAML's full ``Loader``, which builds arbitrary Python objects
(``!!python/object/apply:os.system``): an option file could run code. :func:`patch_yaml` makes
its parser use the launchers' safe loader (:func:`~ts_defense.adapters._launch.safe_ordered_yaml`:
plain YAML — mappings, lists, numbers, strings) that also refuses aliases (``*a``: a 1.5 kB file
of nested aliases expands to billions of nodes, on which BasicSR's ``dict2str`` never returns),
deep nesting and repeated keys.
"""

from __future__ import annotations

import _ts_defense_torchvision

from .._launch import safe_ordered_yaml

OLD = _ts_defense_torchvision.OLD
NEW = _ts_defense_torchvision.NEW


def patch_torchvision() -> bool:
    """Alias ``OLD`` to ``NEW`` if ``OLD`` is gone; returns whether an alias was installed."""
    return _ts_defense_torchvision.alias()


def patch_yaml() -> None:
    """Make ``basicsr.utils.options.parse_options`` read option files with a safe loader."""
    import basicsr.utils.options as options

    options.ordered_yaml = safe_ordered_yaml
