"""CPU settings of the trainer, and that it applies them: train.cpu_keep_freed_memory (after
keep_freed_memory(), a step's large tensors stop page-faulting; glibc would otherwise mmap each
block above 32 MiB afresh and unmap it on free) and the bf16 check behind train.autocast's
warning."""

import logging
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from recsys_kdef.config import TrainConfig
from recsys_kdef.training import process_settings
from recsys_kdef.training.process_settings import native_cpu_bf16

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# a "step" that allocates and fills 64 MiB and 40 MiB tensors, then frees them; prints the minor
# page faults of each of 24 steps
SCRIPT = """
import resource, sys, torch
from recsys_kdef.training.process_settings import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(24):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a, b = torch.ones(16 << 20), torch.ones(10 << 20)
    del a, b
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def page_faults_per_step(mode: str) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return [int(f) for f in out.stdout.split()]


@glibc
def test_after_keep_freed_memory_steps_stop_page_faulting():
    pages = (26 << 20) * 4 // 4096  # what the two tensors span, in 4 KiB pages
    default = page_faults_per_step("default")
    assert min(default) > 0.9 * pages  # every step maps its tensors in again
    kept = page_faults_per_step("keep")
    # the heap settles within a few steps (how fast varies), then steps reuse its pages: the
    # last 12 steps together fault in less than one default step does
    assert sum(kept[-12:]) < pages


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(), reason="x86 CPU flags"
)
def test_native_bf16_is_what_the_cpu_flags_say():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert native_cpu_bf16() == ({"avx512bw", "avx512vl", "avx512dq"} <= flags)


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("native", [True, False])
def test_the_trainer_applies_the_cpu_settings_its_config_asks_for(
    monkeypatch, caplog, keep, native
):
    # the process-wide effects are replaced by recorders: the wiring is what is checked here
    calls = []
    monkeypatch.setattr(process_settings, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(process_settings, "native_cpu_bf16", lambda: native)
    cfg = TrainConfig(cpu_keep_freed_memory=keep, autocast="bf16")
    with caplog.at_level(logging.WARNING, logger="recsys_kdef"):
        process_settings.apply_process_settings(cfg, torch.device("cpu"))
        process_settings.apply_process_settings(replace(cfg, autocast="none"), torch.device("cpu"))
    assert calls == ["keep", "keep"] if keep else calls == []
    warned = [r for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warned) == (0 if native else 1)  # only for bf16 on a CPU without it
