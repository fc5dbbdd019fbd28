"""Independent random streams from one user seed, one per purpose.

Two ``torch.Generator`` objects seeded with the same integer produce the same bits, so an
attack's uniform random start and the Gaussian test noise drawn "with seed 0" were correlated
(about -0.34): the attack started from a point that partly cancelled the noise and came out
weaker. Every random purpose in the library (training noise, test noise, patch positions,
attack starts, adversarial-training budgets, Jacobian-penalty directions) therefore seeds its
generator with ``stream_seed(seed, purpose)``, a hash of the pair: different purposes never
share a stream, and the same seed and purpose always give the same one.
"""

from __future__ import annotations

import hashlib

from ._checks import check_choice, check_seed

PURPOSES = ("noise", "test-noise", "patches", "attack", "adversarial", "directions")


def stream_seed(seed: int, purpose: str) -> int:
    """The seed of ``purpose``'s generator for the user's ``seed``: an int in ``[0, 2**63)``."""
    check_seed("seed", seed)
    check_choice("purpose", purpose, PURPOSES)
    digest = hashlib.sha256(f"ts-defense/{purpose}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
