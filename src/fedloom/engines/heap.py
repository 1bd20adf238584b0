"""The C heap's settings for training processes (glibc's malloc), the run option ``--malloc``.

A local SGD step allocates and frees the same tensors every step: for FedAvgCNN at batch 10, activations and
gradients of 0.1–1 MB each. glibc serves blocks above its mmap threshold with fresh pages that go back to the
system on free, and it trims the top of its heap once more than the trim threshold lies free there, so the next
step faults the same memory in and zeroes it again. The threshold glibc adapts on its own does not settle: over
200 W1 steps one process saw 60 thousand minor page faults, the next 330 thousand (benchmarks/w1_kernels.py under
/usr/bin/time; docs/benchmarks.md, "The C heap").

``tuned`` (the default) keeps freed memory in the heap for the next step: blocks up to 32 MiB (glibc's ceiling
for the mmap threshold on 64-bit) come from the heap, up to 256 MiB may lie free at its top before it is
trimmed, and it grows in 64 MiB steps. That costs up to ~256 MiB of resident memory per process that would
otherwise go back to the system, and changes no arithmetic. ``system`` leaves the heap as it is (glibc's
defaults unless something in the process set them). Other C libraries (musl, macOS) have no ``mallopt``: there
both are the system's allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MiB = 1 << 20
TUNED = {M_MMAP_THRESHOLD: 32 * MiB, M_TRIM_THRESHOLD: 256 * MiB, M_TOP_PAD: 64 * MiB}
CHOICES = ("tuned", "system")


def _mallopt() -> Optional[ctypes._CFuncPtr]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return getattr(libc, "mallopt", None)


def configure_heap(mode: str) -> bool:
    """Apply ``mode`` (see the module docstring) to this process; True when glibc took the tuned settings."""
    if mode != "tuned":
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return all(mallopt(param, value) == 1 for param, value in TUNED.items())
