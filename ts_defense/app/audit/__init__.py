"""``ts-defense evaluate`` / ``compare``: audit a user's denoiser against adversarial attacks.

A model is a weights file (architecture detected by spandrel, loaded with ``weights_only``), a
named zoo model, a Python ``module:function`` or a training checkpoint (``fit``'s, BasicSR's,
KAIR's); images are a folder, a named set or the bundled pictures, large ones scored on a few
random tiles (or all of them). :func:`run_audit` reports clean PSNR/SSIM, white-box APGD per
budget (PGD on the ``pgd`` fast path), zero-mean L2, transfer from the public DnCNN-25s, the
per-image worst case over them with the evidence of its convergence (:mod:`.worst`),
pass-through PSNR and gain, and the typicality of the attacked inputs, per image and in the
mean; :func:`write_report` writes Markdown, JSON and one page of plots, failed checks and NaN
outputs first.
"""

from .images import Picture, image_batches, resolve_images
from .models import AuditModel, resolve_model
from .page import write_report
from .run import AuditConfig, batch_size, estimate_seconds, estimate_text, run_audit

__all__ = [
    "AuditConfig",
    "AuditModel",
    "Picture",
    "batch_size",
    "estimate_seconds",
    "estimate_text",
    "image_batches",
    "resolve_images",
    "resolve_model",
    "run_audit",
    "write_report",
]
