"""TS training inside KAIR (github.com/cszn/KAIR), without editing KAIR's files.

KAIR is not a package: it runs from its own folder with ``models/``, ``data/`` and ``utils/``
on ``sys.path`` and picks classes in if/elif factories. :func:`install` puts a KAIR checkout on
the path and wraps the two factories so that they also know

- models ``"ts_plain"`` (on ``ModelPlain``: ``netG(L)``, with or without a noise-level map
  channel in ``L`` as FDnCNN takes it) and ``"ts_plain2"`` (on ``ModelPlain2``: ``netG(L, C)``,
  FFDNet): the TS noisy ``L`` is drawn from ``H`` on the training device, configured by a
  top-level ``"ts"`` block (sigma in grey levels, as KAIR's options give it);
- datasets ``"ts_dncnn"``, ``"ts_ffdnet"`` and ``"ts_fdncnn"``: KAIR's own DnCNN / FFDNet /
  FDnCNN datasets (same keys, same crops, same sigma draws, same fixed-seed test noise) whose
  training noise is TS noise at the nominal sigma they drew; an optional ``"ts"`` block in the
  dataset options configures it.

Launch with ``python -m ts_defense.adapters.kair --kair-root PATH --opt options.json``: the
launcher refuses, in one line and before KAIR starts, an option file whose ``ts`` blocks would be
ignored or are wrong (:func:`check_options`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .checks import DATASETS, MODELS, check_options
from .dataset import dataset_classes
from .model import TrainingFinished, model_classes, patch_model_base, stop_after

REQUIRED = ("main_train_psnr.py", "models/select_model.py", "data/select_dataset.py")


def kair_root(path: str | Path) -> Path:
    """Check that ``path`` is a KAIR checkout; errors name what is missing."""
    root = Path(path).expanduser().resolve()
    missing = [f for f in REQUIRED if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"--kair-root {root} is not a KAIR checkout: missing {missing}")
    return root


def install(path: str | Path, max_steps: int | None = None) -> None:
    """Put KAIR at ``path`` first on ``sys.path`` and teach ``define_Model`` /
    ``define_Dataset`` the TS names (other names go to KAIR's own factories unchanged); let
    every KAIR model run without CUDA (:func:`~.model.patch_model_base`).

    ``max_steps`` stops training after that many steps, whatever the model (KAIR's loop has no
    stop condition): the next training step raises :class:`TrainingFinished`.
    """
    root = str(kair_root(path))
    if root not in sys.path:
        sys.path.insert(0, root)
    import data.select_dataset as select_dataset
    import models.select_model as select_model

    patch_model_base()

    define_model = getattr(select_model.define_Model, "kair_factory", select_model.define_Model)
    define_dataset = getattr(
        select_dataset.define_Dataset, "kair_factory", select_dataset.define_Dataset
    )

    def define_Model(opt: dict):  # noqa: N802, ANN202 (KAIR's name)
        if opt["model"] in MODELS:
            model = model_classes()[opt["model"]](opt)
            print(f"Training model [{type(model).__name__}] is created.")
        else:
            model = define_model(opt)
        if max_steps is not None:
            stop_after(model, max_steps)
        return model

    def define_Dataset(dataset_opt: dict):  # noqa: N802, ANN202
        kind = str(dataset_opt["dataset_type"]).lower()
        if kind not in DATASETS:
            return define_dataset(dataset_opt)
        dataset = dataset_classes()[kind](dataset_opt)
        print(f"Dataset [{type(dataset).__name__} - {dataset_opt['name']}] is created.")
        return dataset

    define_Model.kair_factory = define_model
    define_Dataset.kair_factory = define_dataset
    select_model.define_Model = define_Model
    select_dataset.define_Dataset = define_Dataset


__all__ = ["DATASETS", "MODELS", "TrainingFinished", "check_options", "install", "kair_root"]
