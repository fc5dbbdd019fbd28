"""``ts-defense evaluate`` / ``compare``: audit a user's denoiser against adversarial attacks.

A model is a weights file (architecture detected by spandrel, loaded with ``weights_only``), a
named zoo model or a Python ``module:function``; images are a folder, a named set or the bundled
pictures. :func:`run_audit` reports clean PSNR/SSIM, white-box PGD per budget, ObsAtk, transfer
from the public DnCNN-25s, pass-through PSNR and gain, and the typicality of the attacked inputs,
per image and in the mean; :func:`write_report` writes Markdown, JSON and one page of plots.
"""

from .images import AuditImage, resolve_images
from .models import AuditModel, resolve_model
from .page import write_report
from .run import AuditConfig, estimate_seconds, run_audit

__all__ = [
    "AuditConfig",
    "AuditImage",
    "AuditModel",
    "estimate_seconds",
    "resolve_images",
    "resolve_model",
    "run_audit",
    "write_report",
]
