"""The application on top of the library: the ``ts-defense`` command line (:mod:`.cli`), the
main job (:mod:`.hardening`: the public DnCNN-S-25 hardened and audited) and the toy study
from scratch (:mod:`.demo`), the reports behind the commands (:mod:`.report`), the audit of a
user's denoiser (:mod:`.audit`) and every plot (:mod:`.plots`, drawn on matplotlib ``Figure``
objects, never through pyplot).

Nothing below this package imports from it (only the deprecated old paths point here, on
first use)."""
