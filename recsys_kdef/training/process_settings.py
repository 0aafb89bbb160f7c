"""The process-wide settings of train.* (TF32 on CUDA; on CPU the allocator setting and the bf16
check), applied by the process's one trainer.

The CPU allocator setting: glibc's malloc keeps freed memory for the next step.

glibc serves a block above its mmap threshold (at most 32 MiB) with a fresh mmap and returns it
to the system on free, so every step's large activations, (K, B, H) float32 tensors of 65 MiB
at K=10 and batch 4096, were page-faulted in anew, and the kernel zeroed each page.
"""

from __future__ import annotations

import ctypes
import logging
import platform

import torch

from recsys_kdef.config import TrainConfig

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


def apply_process_settings(cfg: TrainConfig, device: torch.device) -> None:
    """The process-wide settings of train.*, applied by the process's one trainer: TF32 on
    CUDA; on CPU the allocator setting and a warning where bf16 autocast would be emulated."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    elif device.type == "cpu":
        if cfg.cpu_keep_freed_memory:
            keep_freed_memory()
        if cfg.autocast == "bf16" and not native_cpu_bf16():
            logger.warning(
                "train.autocast=bf16 on a CPU without oneDNN's bf16 matmuls (they need AVX-512):"
                " they are emulated, 14x slower than float32 on a 2-core AVX2 EPYC (docs/gpu_throughput.md); use"
                " train.autocast: none"
            )


def native_cpu_bf16() -> bool:
    """Whether oneDNN has bf16 matmul kernels for this CPU (x86: AVX-512 BW/VL/DQ, using
    AVX512-BF16 and AMX where present); True when torch cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True
