"""``ts`` options that BasicSR would silently ignore are refused before the run starts.

BasicSR passes unknown keys through: a ``ts:`` block under ``model_type: SRModel`` would train
plain Gaussian denoising for days without a word. Importing ``ts_defense.adapters.basicsr`` wraps
BasicSR's ``parse_options`` (in ``basicsr.utils.options``, ``basicsr.train`` and ``basicsr.test``)
so that :func:`check_ts_options` runs right after the options are parsed (``--force_yml``
included) — before ``train_pipeline``/``test_pipeline`` create experiment or result folders or
log BasicSR's banner. A user's own ``train.py`` (``import ts_defense.adapters.basicsr`` then
``train_pipeline(root)``) and ``python -m ts_defense.adapters.basicsr`` both go through it.

Where a block is read, its contents are checked too (the same parsers the model and dataset
use), so a wrong ``ts.families.radial.band`` also fails before any folder exists; a block anywhere
else (under ``network_g``, ``train``) is refused as misplaced, and a key the file gives twice by
its path.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .._launch import check_tree, misplaced_ts, one_line
from .._options import training_from_options

MARK = "_ts_defense_checked"
PLACES = (
    "move it to the top level (read by model_type TSModel) or to datasets.train (read by type "
    "TSGaussianDenoisingDataset)"
)


def _registered(registry: Any, name: object) -> type | None:
    """The class registered as ``name`` (BasicSR also tries ``<name>_basicsr``), else None."""
    if not isinstance(name, str):
        return None
    for key in (name, f"{name}_basicsr"):
        if key in registry:
            return registry.get(key)
    return None


def check_ts_options(opt: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the option and the type when a ``ts`` block would be ignored:

    - a ``ts`` block is read only at the top level and under ``datasets.<phase>``;
    - ``ts`` (top level) is read only by a TS model type: ``TSModel`` or a class made with
      :func:`~ts_defense.adapters.basicsr.ts_model` and registered;
    - ``datasets.<phase>.ts`` only by ``TSGaussianDenoisingDataset`` (and subclasses) in the
      training phase, and never under a TS model type, which draws its own noise from ``gt``.
    """
    from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

    from .dataset import TSGaussianDenoisingDataset
    from .model import TSModelMixin

    check_tree(opt, "options")  # the launcher's reader refused these already; a train.py's not
    misplaced_ts(opt, PLACES)
    model_type = opt.get("model_type")
    model = _registered(MODEL_REGISTRY, model_type)
    ts_model = isinstance(model, type) and issubclass(model, TSModelMixin)
    if opt.get("ts") is not None:
        if model is None:
            raise ValueError(
                f"ts: model_type {model_type!r} is not a registered BasicSR model (import the "
                f"module that registers it before train_pipeline)"
            )
        if not ts_model:
            raise ValueError(
                f"ts: model_type {model_type!r} ignores the ts block; use model_type TSModel "
                f"(or a registered ts_model(...) class), or TS noise in the data loader "
                f"(datasets.train.type TSGaussianDenoisingDataset with its own ts block)"
            )
    if ts_model:
        training_from_options(opt.get("ts"), "ts")  # what the model will build, checked now
    for phase, dataset in (opt.get("datasets") or {}).items():
        if not isinstance(dataset, Mapping):
            continue
        key = f"datasets.{phase}"
        kind = _registered(DATASET_REGISTRY, dataset.get("type"))
        ts_dataset = isinstance(kind, type) and issubclass(kind, TSGaussianDenoisingDataset)
        training = str(phase).split("_")[0] == "train"
        if dataset.get("ts") is not None:
            if not ts_dataset:
                raise ValueError(
                    f"{key}.ts: dataset type {dataset.get('type')!r} ignores the ts block; use "
                    f"type TSGaussianDenoisingDataset, or model_type TSModel with a top-level ts"
                )
            if not training:
                raise ValueError(
                    f"{key}.ts: the {phase} phase ignores the ts block (validation images get "
                    f"Gaussian noise at sigma_test); keep ts in datasets.train"
                )
            if ts_model:
                raise ValueError(
                    f"{key}.ts: model_type {model_type!r} ignores the dataset's ts block (it "
                    f"draws its own TS noise from gt); keep one: the top-level ts or {key}.ts"
                )
        if ts_dataset and training:
            TSGaussianDenoisingDataset.training_noise(dataset, key)


def checked(parse_options: Callable) -> Callable:
    """``parse_options`` followed by :func:`check_ts_options`; a refusal exits with a one-line
    ``<prog>: error: ...`` (as argparse does for BasicSR's flags), before any folder exists."""
    if getattr(parse_options, MARK, False):
        return parse_options

    @functools.wraps(parse_options)
    def parse_and_check(*args: Any, **kwargs: Any) -> Any:
        opt, parsed = parse_options(*args, **kwargs)
        try:
            check_ts_options(opt)
        except (TypeError, ValueError) as err:
            prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "basicsr"
            raise SystemExit(f"{prog}: error: {one_line(err)}") from err
        return opt, parsed

    setattr(parse_and_check, MARK, True)
    return parse_and_check


def install() -> None:
    """Wrap ``parse_options`` where BasicSR binds it (idempotent)."""
    import importlib

    for name in ("basicsr.utils.options", "basicsr.train", "basicsr.test"):
        module = importlib.import_module(name)
        module.parse_options = checked(module.parse_options)
