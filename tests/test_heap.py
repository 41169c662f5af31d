"""The heap policies of lfads_core.heap: while training, large blocks stay in the heap and are
reused without page faults; for sampling they are mapped afresh and given back."""

from __future__ import annotations

import platform
import resource

import numpy as np
import pytest

from lfads_core.heap import hold_memory, release_memory

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def _faults(n: int = 4) -> int:
    """Minor page faults of allocating, touching and freeing a 64 MiB block ``n`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        block = np.ones(16 << 20, dtype=np.float32)
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_held_blocks_are_reused_and_released_ones_are_mapped_afresh():
    try:
        hold_memory()
        _faults(1)  # the heap grows once
        held = _faults()
        release_memory()
        _faults(1)
        released = _faults()
        assert held < 20, held
        assert released > 60, released  # >= 32 faults per 64 MiB block even with 2 MiB pages
    finally:
        release_memory()  # the default of this process for the tests that follow
