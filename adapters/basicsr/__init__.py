"""TS training inside BasicSR: importing this module registers, with BasicSR's registries,

- the model type ``TSModel`` (:mod:`.model`): TS noise drawn from ``gt`` on the training device;
- the dataset type ``TSGaussianDenoisingDataset`` (:mod:`.dataset`): TS noise in the data loader,
  a drop-in for Restormer's ``Dataset_GaussianDenoising``.

It first makes BasicSR 1.4.2 importable on torchvision >= 0.17 (:mod:`._compat`), and makes
BasicSR's ``parse_options`` refuse ``ts`` blocks that the chosen types would ignore
(:mod:`.checks`). Without BasicSR, importing it raises one line naming the install command.
Train with ``python -m ts_defense.adapters.basicsr -opt options.yml``
(BasicSR's ``train.py`` flags), or from your own ``train.py``: import this module, then call
``basicsr.train.train_pipeline(root_path)``.
"""

from __future__ import annotations

from .._launch import missing
from ._compat import patch_torchvision, patch_yaml

try:
    patch_torchvision()
    patch_yaml()  # option files may come from anyone: no Python objects from YAML

    from basicsr.models.sr_model import SRModel
    from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY
except ImportError as err:  # one line, and no traceback under python -m
    missing(err, __name__, "BasicSR", 'pip install "ts-defense[basicsr]"')

from . import checks  # noqa: E402
from .checks import check_ts_options  # noqa: E402
from .dataset import TSGaussianDenoisingDataset  # noqa: E402
from .model import TSModelMixin, sampler_state_path, ts_model  # noqa: E402

TSModel = ts_model(SRModel, name="TSModel")

for _registry, _obj in ((MODEL_REGISTRY, TSModel), (DATASET_REGISTRY, TSGaussianDenoisingDataset)):
    if _obj.__name__ not in _registry:  # importlib.reload and re-imports register once
        _registry.register(_obj)
checks.install()

__all__ = [
    "TSGaussianDenoisingDataset",
    "TSModel",
    "TSModelMixin",
    "check_ts_options",
    "patch_torchvision",
    "patch_yaml",
    "sampler_state_path",
    "ts_model",
]
