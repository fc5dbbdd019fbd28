"""The model to audit, from what a user types: a named zoo model, ``module:function`` or a
weights file whose architecture spandrel detects (DnCNN, DRUNet, SwinIR, SCUNet...).

Files are read with :func:`ts_defense._io.safe_load` (``weights_only=True``); the state dict
(taken out of a training checkpoint: :func:`state_dict`) is handed to spandrel: spandrel's own
file loader unpickles with a restricted unpickler, not torch's weights-only one. DnCNN state
dicts that spandrel does not know (DnCNN-PyTorch's, ``ts_defense.models.DnCNN``'s) load through
:func:`ts_defense.models.load_dncnn`, with or without spandrel installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import MissingDependency, optional_import
from ..._io import safe_load
from ...models import load_dncnn
from ...models.denoiser import Denoiser
from ...models.zoo import MODELS, load_model, model_source
from ...training.checkpoint import FORMAT as CHECKPOINT_FORMAT
from ...training.checkpoint import read_checkpoint

# spandrel architecture id -> how its network takes sigma (the rest predict the clean image)
NOISE_MAP_ARCHS = ("DRUNet",)


@dataclass
class AuditModel:
    """A denoiser to audit: its name, the wrapped model, its image channels and its origin."""

    name: str
    denoiser: Denoiser
    channels: int
    source: str


class Padded(nn.Module):
    """Run ``model`` on its input padded (reflect) to a multiple of ``multiple``, cropped back."""

    def __init__(self, model: nn.Module, multiple: int) -> None:
        super().__init__()
        self.model, self.multiple = model, multiple

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        mode = "reflect" if ph < h and pw < w else "replicate"
        out = self.model(F.pad(x, (0, pw, 0, ph), mode=mode) if ph or pw else x)
        return out[..., :h, :w]


def _first_conv_channels(module: nn.Module) -> int | None:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else conv.in_channels


def _channels(den: Denoiser) -> int:
    """Image channels a model takes: its first convolution's inputs, less a noise-level map."""
    found = _first_conv_channels(den.model) if isinstance(den.model, nn.Module) else None
    if found is None:
        return 1
    found -= 1 if den.noise_level == "map" else 0
    return found if found in (1, 3) else 1


def _from_function(spec: str) -> AuditModel:
    module_name, _, attr = spec.partition(":")
    try:
        factory: Callable = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"model {spec!r}: cannot import {attr} from {module_name}: {err}") from err
    if not callable(factory):
        raise TypeError(f"model {spec!r}: {attr} is a {type(factory).__name__}, not a function")
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {spec!r} returned a {type(model).__name__}, not an nn.Module")
    den = model if isinstance(model, Denoiser) else Denoiser(model, predicts="clean")
    return AuditModel(attr, den.eval(), _channels(den), f"Python function {spec}")


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def state_dict(obj: object, path: Path) -> tuple[dict[str, Tensor], str]:
    """The network's weights in a loaded file, and where they were found: a state dict as such
    (KAIR's ``*_G.pth``), the ``"model"`` of a checkpoint of :func:`ts_defense.fit` /
    ``save_checkpoint`` (refused when its digest does not match; its weight average when
    ``fit`` kept one), or ``"params_ema"`` (else
    ``"params"``) of BasicSR's ``net_g_*.pth``; wrappers' key prefixes (``module.``,
    ``_orig_mod.``) are taken off. Anything else is a one-line ValueError."""
    where = "state dict"
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        state = read_checkpoint(path)
        obj, where = state.get("model"), "model of a ts-defense checkpoint"
        ema = state.get("extra", {}).get("ema")
        if isinstance(obj, dict) and isinstance(ema, dict) and "names" in ema:
            # fit(ema=...) ends with the averaged weights: audit those, not the raw ones
            obj = {**obj, **dict(zip(ema["names"], ema["shadow"], strict=True))}
            where = "weight average (ema) of a ts-defense checkpoint"
    elif isinstance(obj, dict) and isinstance(obj.get("params_ema", obj.get("params")), dict):
        key = "params_ema" if isinstance(obj.get("params_ema"), dict) else "params"
        obj, where = obj[key], f"BasicSR {key}"
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        keys = ", ".join(map(str, list(obj)[:4])) if isinstance(obj, dict) else ""
        held = f"keys {keys}" if keys else f"a {type(obj).__name__}"
        raise ValueError(
            f"{path} holds no network weights ({held}): give a state dict, a checkpoint of "
            f"ts-defense's fit, BasicSR's net_g_*.pth or KAIR's *_G.pth"
        )
    return _strip(_strip(obj, "module."), "_orig_mod."), where


def _dncnn(state: dict[str, Tensor], path: Path, where: str) -> AuditModel:
    try:
        den = Denoiser(load_dncnn(state), predicts="noise")
    except (RuntimeError, IndexError) as err:  # keys of DnCNN's layout, shapes of another net
        raise ValueError(f"{path}: not a DnCNN state dict") from err
    return AuditModel(path.stem, den.eval(), _channels(den), f"DnCNN ({where}) from {path}")


def _from_file(path: Path) -> AuditModel:
    state, where = state_dict(safe_load(path, "weights file", finite=True), path)
    try:
        spandrel = optional_import("spandrel", "archs", f"{path} (architecture detection)")
    except MissingDependency as missing:
        try:  # a DnCNN needs no detection
            return _dncnn(state, path, where)
        except ValueError:
            raise missing from None
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        try:
            return _dncnn(state, path, where)
        except ValueError as err:
            raise ValueError(
                f"{path}: spandrel does not recognise this architecture and it is not a DnCNN "
                f"state dict; load it with a Python function instead (module:function)"
            ) from err
    net = desc.model
    multiple = max(desc.size_requirements.multiple_of, 1)
    if multiple > 1:
        net = Padded(net, multiple)
    arch = desc.architecture.id
    tags = ", ".join(desc.tags)
    noise_level = "map" if arch in NOISE_MAP_ARCHS or "FDnCNN" in desc.tags else "none"
    den = Denoiser(net, predicts="clean", noise_level=noise_level)
    source = f"{arch} ({tags}; {where}) from {path}"
    return AuditModel(path.stem, den.eval(), desc.input_channels, source)


def resolve_model(spec: str, data_dir: Path | None = None) -> AuditModel:
    """A zoo name, ``module:function`` (returning an nn.Module or a Denoiser; a plain module is
    taken to predict the clean image) or a weights file (.pth, .pt, .ckpt)."""
    if spec in MODELS:
        den = load_model(spec, data_dir)
        return AuditModel(spec, den, 1, f"zoo model {spec}: {model_source(spec)}")
    if ":" in spec and not Path(spec).exists():
        return _from_function(spec)
    path = Path(spec)
    if path.is_file():
        return _from_file(path)
    if path.suffix or len(path.parts) > 1:  # a path, not a name
        raise FileNotFoundError(f"no such file: {spec}")
    raise FileNotFoundError(
        f"model {spec!r} is neither a weights file, a named model ({', '.join(MODELS)}) "
        f"nor module:function"
    )
