"""Denoiser definitions: DnCNN (with the pretrained weights' loader and the toy-scale
``SmallDnCNN``), an unfolded proximal-gradient network and a plug-and-play HQS wrapper around
any denoiser; :mod:`ts_defense.models.zoo` names the pretrained ones (and BM3D)."""

from .dncnn import DnCNN, SmallDnCNN, load_dncnn
from .pnp import PnPHQS
from .unfolded import ProxGradUnfolded

__all__ = ["DnCNN", "PnPHQS", "ProxGradUnfolded", "SmallDnCNN", "load_dncnn"]
