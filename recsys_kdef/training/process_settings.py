"""The CPU allocator setting for training: glibc's malloc keeps freed memory for the next step.

glibc serves a block above its mmap threshold (at most 32 MiB) with a fresh mmap and returns it
to the system on free, so every step's large activations, (K, B, H) float32 tensors of 65 MiB
at K=10 and batch 4096, were page-faulted in anew, and the kernel zeroed each page.
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: free memory at the heap's top kept up to 2 GiB


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve every block from its heap (M_MMAP_MAX=0) and keep freed memory
    rather than trim it (M_TRIM_THRESHOLD), process-wide. After a few steps the heap holds a
    step's working set and steps stop page-faulting; the resident size stays at its peak.
    Returns False (and changes nothing) where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        logger.info("train.cpu_keep_freed_memory: the C library is not glibc; left as it is")
        return False
    libc = ctypes.CDLL(None)
    no_mmap = libc.mallopt(M_MMAP_MAX, 0)  # mallopt returns 1 on success
    return bool(no_mmap and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
