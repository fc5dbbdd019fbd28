"""Small denoiser definitions used by tests, benchmarks and the demo."""

from .dncnn import DnCNN, load_dncnn

__all__ = ["DnCNN", "load_dncnn"]
