"""One calling convention for every denoiser: ``Denoiser(model)(noisy, sigma) -> clean``.

The layers above (training step, attacks, evaluation) call models only through this wrapper,
so they work with models that predict the clean image or the noise residual, that take a
noise-level map as an extra input channel (FFDNet, DRUNet) or sigma as an argument
(deepinv-style ``model(y, sigma)``), and that return a list of outputs (the last is used).
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_images
from ..noise.typical import sigma_tensor

PREDICTS = ("clean", "noise")
NOISE_LEVEL = ("none", "map", "argument")


def per_sample_sigma(sigma: Tensor | float, noisy: Tensor) -> Tensor:
    """Sigma as a (B,) tensor in the dtype and on the device of ``noisy``: a number (checked
    > 0), a one-element or a (B,) tensor (not read: no wait for the device)."""
    sig = sigma_tensor(sigma, noisy, check_values=False)
    if sig.shape[1:] != (1, 1, 1):
        raise ValueError(f"sigma must be a number or a (B,) vector here, got {tuple(sig.shape)}")
    return sig.reshape(-1).expand(noisy.shape[0]).to(noisy.dtype)


def _takes_two_arguments(model: object) -> bool:
    """Whether ``model(noisy, sigma)`` binds (True when the signature cannot be read)."""
    try:
        signature = inspect.signature(model.forward if isinstance(model, nn.Module) else model)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(None, None)
    except TypeError:
        return False
    return True


class Denoiser(nn.Module):
    """Wrap ``model`` so that ``forward(noisy, sigma)`` returns the clean estimate.

    predicts: ``"clean"`` or ``"noise"`` (residual models such as DnCNN).
    noise_level: ``"none"``, ``"map"`` (a (B, 1, H, W) sigma channel appended to the input) or
        ``"argument"`` (``model(noisy, sigma)`` with sigma of shape (B,)).

    Shapes, dtypes and numeric sigmas are checked on every call; NaN/Inf inside tensors are not
    (that would synchronise the device at every attack step): the layers above check their
    inputs once, and a NaN given here comes out as NaN.
    """

    def __init__(
        self, model: nn.Module, predicts: str = "clean", noise_level: str = "none"
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or callable, got {type(model).__name__}")
        self.model = model
        self.predicts = check_choice("predicts", predicts, PREDICTS)
        self.noise_level = check_choice("noise_level", noise_level, NOISE_LEVEL)
        if self.noise_level == "argument" and not _takes_two_arguments(model):
            raise TypeError(
                f"noise_level='argument' calls model(noisy, sigma), but {type(model).__name__} "
                f"takes no sigma argument: use noise_level='map' or 'none'"
            )

    def forward(self, noisy: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        check_images(noisy, "noisy", finite=False)  # cheap: no reduction in the hot loop
        if self.noise_level != "none":
            if sigma is None:
                raise ValueError(f"noise_level={self.noise_level!r} needs the nominal sigma")
            b, _, h, w = noisy.shape
            sig = per_sample_sigma(sigma, noisy)
            if self.noise_level == "map":
                sigma_map = sig.view(b, 1, 1, 1).expand(b, 1, h, w)
                out = self._run(noisy, torch.cat([noisy, sigma_map], 1))
            else:
                out = self._run(noisy, noisy, sig)
        else:
            out = self._run(noisy, noisy)
        if isinstance(out, (list, tuple)) and out:
            out = out[-1]
        if not isinstance(out, Tensor) or out.shape != noisy.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"model output {got} must have the input's shape {tuple(noisy.shape)} "
                f"(predicts={self.predicts!r})"
            )
        return noisy - out if self.predicts == "noise" else out

    def _run(self, noisy: Tensor, *args: Tensor) -> object:
        """``model(*args)``; a mismatch with the input (channels, dtype, device) inside torch
        becomes a ValueError that says which input the model got."""
        try:
            return self.model(*args)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as err:
            params = (
                next(iter(self.model.parameters()), None)
                if isinstance(self.model, nn.Module)
                else None
            )
            weights = (
                f"; its weights are {params.dtype} on {params.device}" if params is not None else ""
            )
            raise ValueError(
                f"model failed on noisy input of shape {tuple(noisy.shape)}, {noisy.dtype} on "
                f"{noisy.device} (model input {tuple(args[0].shape)}{weights}): {err}"
            ) from err
