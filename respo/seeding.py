"""Explicit, keyed randomness: every generator comes from ``SeedSequence([seed, *keys])``.

Design rule P7 (docs/design.md): randomness is explicit and shared across variants.

The same keys in GRPO, RRPO and SRPO runs (or in different simulator arms) give the same random
stream, so comparisons are paired (common random numbers). Nothing in ``respo`` calls the
module-level ``np.random.*``, ``random.*`` or ``torch.manual_seed``; a test greps for it.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.random import Generator

ROLES: dict[str, int] = {
    "fresh": 1,
    "localize": 2,
    "suffix": 3,
    "eval": 4,
    "data": 5,
    "init": 6,
    "train": 7,
    "mdp": 8,
}
"""Role names of the random streams; the integers are part of the seeding scheme (do not reuse)."""


def _key(k: int | str) -> int:
    if isinstance(k, bool):
        raise TypeError("boolean seeding keys are ambiguous; pass an int or a role name")
    if isinstance(k, (int, np.integer)):
        if int(k) < 0:
            raise ValueError(f"seeding keys must be non-negative, got {k}")
        return int(k)
    if isinstance(k, str):
        if k in ROLES:
            return ROLES[k]
        # Stable across processes and Python versions (unlike hash()).
        return int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
    raise TypeError(f"seeding key must be int or str, got {type(k).__name__}")


def seed_sequence(seed: int, *keys: int | str) -> np.random.SeedSequence:
    """The SeedSequence for (seed, *keys); role names map through ``ROLES``."""
    return np.random.SeedSequence([_key(seed), *(_key(k) for k in keys)])


def rng_for(seed: int, *keys: int | str) -> Generator:
    """A numpy Generator keyed by (seed, *keys), e.g. ``rng_for(seed, step, problem, "suffix")``."""
    return np.random.default_rng(seed_sequence(seed, *keys))


def int_seed_for(seed: int, *keys: int | str) -> int:
    """A 63-bit integer seed keyed like ``rng_for`` (for torch generators and other libraries)."""
    return int(seed_sequence(seed, *keys).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot(np.array([1, 2**31], dtype=np.uint64)))
