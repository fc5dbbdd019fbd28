"""``ts`` options that KAIR would silently ignore, or that would fail once training starts, refused
before KAIR runs.

KAIR passes unknown keys through: a top-level ``ts`` block under ``"model": "plain"`` would train
plain Gaussian denoising without a word. The launcher reads the option file itself (repeated keys
and deep nesting refused: :func:`~ts_defense.adapters._launch.read_options`) and runs
:func:`check_options`, which parses every block that will be read with the parsers the models and
datasets use, so that a wrong option exits in one line before KAIR creates a folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._launch import misplaced_ts
from .dataset import training_noise
from .model import model_noise

MODELS = {"ts_plain": "ModelPlain", "ts_plain2": "ModelPlain2"}
DATASETS = {"ts_dncnn": "DatasetDnCNN", "ts_ffdnet": "DatasetFFDNet", "ts_fdncnn": "DatasetFDnCNN"}
PLACES = (
    "move it to the top level (read by model ts_plain or ts_plain2) or to datasets.train (read by "
    "dataset_type ts_dncnn, ts_ffdnet or ts_fdncnn)"
)


def check_options(opt: Mapping[str, Any]) -> None:
    """Raise ``ValueError``/``TypeError`` naming the option when a ``ts`` block would be ignored
    or its contents are wrong:

    - a ``ts`` block is read only at the top level and under ``datasets.<phase>``;
    - ``ts`` (top level) only by the models ``ts_plain`` and ``ts_plain2``;
    - ``datasets.<phase>.ts`` only by the ``ts_*`` dataset types, in the training phase, and
      never under a TS model, which draws its own noise from ``H``.
    """
    misplaced_ts(opt, PLACES)
    model = opt.get("model")
    ts_model = isinstance(model, str) and model in MODELS
    if opt.get("ts") is not None and not ts_model:
        raise ValueError(
            f"ts: model {model!r} ignores the ts block; use model ts_plain (netG(L)) or ts_plain2 "
            f"(netG(L, C)), or TS noise in the data loader (datasets.train.dataset_type ts_dncnn, "
            f"ts_ffdnet or ts_fdncnn, with its own ts block)"
        )
    if ts_model:
        model_noise(opt, takes_c=model == "ts_plain2")  # what the model will build, checked now
    datasets = opt.get("datasets")
    if not isinstance(datasets, Mapping) or not all(
        isinstance(d, Mapping) for d in datasets.values()
    ):
        raise TypeError("datasets must map each phase (train, test) to its dataset options")
    for phase, dataset in datasets.items():
        key = f"datasets.{phase}"
        kind = str(dataset.get("dataset_type")).lower()
        training = str(phase).split("_")[0] == "train"
        if dataset.get("ts") is not None:
            if kind not in DATASETS:
                raise ValueError(
                    f"{key}.ts: dataset_type {dataset.get('dataset_type')!r} ignores the ts block; "
                    f"use dataset_type ts_dncnn, ts_ffdnet or ts_fdncnn, or model ts_plain with a "
                    f"top-level ts"
                )
            if not training:
                raise ValueError(
                    f"{key}.ts: the {phase} phase ignores the ts block (test images get KAIR's "
                    f"fixed-seed Gaussian noise at sigma_test); keep ts in datasets.train"
                )
            if ts_model:
                raise ValueError(
                    f"{key}.ts: model {model!r} ignores the dataset's ts block (it draws its own "
                    f"TS noise from H); keep one: the top-level ts or {key}.ts"
                )
        if kind in DATASETS and training:
            training_noise(dataset, key, DATASETS[kind])
