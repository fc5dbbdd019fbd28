"""Make ``import basicsr`` work with torchvision >= 0.17, and read its option files safely.

BasicSR 1.4.2 (the release PyPI serves) imports ``torchvision.transforms.functional_tensor``,
a module torchvision renamed to ``_functional_tensor`` in 0.15 and removed in 0.17; since
``basicsr/__init__`` imports every submodule, the whole package fails to import. Before BasicSR
is imported we register the renamed module under the old name — only when the old name is
missing, so a fixed BasicSR or an older torchvision sees no change. Site-packages is not touched.

BasicSR parses option files with PyYAML's full ``Loader``, which builds arbitrary Python objects
(``!!python/object/apply:os.system``): an option file could run code. :func:`patch_yaml` makes
its parser use a safe loader (plain YAML: mappings, lists, numbers, strings) that also refuses
aliases (``*a``): a 1.5 kB file of nested aliases expands to billions of nodes, on which
BasicSR's ``dict2str`` never returns.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

OLD = "torchvision.transforms.functional_tensor"
NEW = "torchvision.transforms._functional_tensor"


def patch_torchvision() -> bool:
    """Alias ``OLD`` to ``NEW`` if ``OLD`` is gone; returns whether an alias was installed."""
    if OLD in sys.modules:
        return False
    try:
        if importlib.util.find_spec(OLD) is not None:
            return False
    except ModuleNotFoundError:  # torchvision itself missing: nothing to fix here
        return False
    sys.modules[OLD] = importlib.import_module(NEW)
    return True


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
