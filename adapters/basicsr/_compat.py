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
its parser use a safe loader (plain YAML: mappings, lists, numbers, strings) that also refuses
aliases (``*a``): a 1.5 kB file of nested aliases expands to billions of nodes, on which
BasicSR's ``dict2str`` never returns.
"""

from __future__ import annotations

import _ts_defense_torchvision

OLD = _ts_defense_torchvision.OLD
NEW = _ts_defense_torchvision.NEW


def patch_torchvision() -> bool:
    """Alias ``OLD`` to ``NEW`` if ``OLD`` is gone; returns whether an alias was installed."""
    return _ts_defense_torchvision.alias()


def safe_ordered_yaml() -> tuple[type, type]:
    """BasicSR's ``ordered_yaml()`` with a *safe* loader: mappings load as ``OrderedDict``."""
    from collections import OrderedDict

    import yaml

    class SafeOrderedLoader(yaml.SafeLoader):
        def compose_node(self, parent: object, index: object) -> object:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{event.anchor} refused in option files", event.start_mark
                )
            return super().compose_node(parent, index)

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> OrderedDict:
        return OrderedDict(loader.construct_pairs(node))

    SafeOrderedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return SafeOrderedLoader, yaml.SafeDumper


def patch_yaml() -> None:
    """Make ``basicsr.utils.options.parse_options`` read option files with a safe loader."""
    import basicsr.utils.options as options

    options.ordered_yaml = safe_ordered_yaml
