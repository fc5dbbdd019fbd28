"""Denoiser definitions: DnCNN (with the pretrained weights' loader), an unfolded
proximal-gradient network and a plug-and-play HQS wrapper around any denoiser."""

from .dncnn import DnCNN, load_dncnn
from .pnp import PnPHQS
from .unfolded import ProxGradUnfolded

__all__ = ["DnCNN", "PnPHQS", "ProxGradUnfolded", "load_dncnn"]
