"""Library warnings and log lines nothing a user can act on, silenced once per process."""

from __future__ import annotations

import logging
import re
import warnings

# Warnings torch and torchrec raise about their own internals (ShardedTensor's deprecation,
# DDP arguments torchrec passes, the planner's storage heuristics, torchrec 1.6's
# ShardingEnv calling torch's deprecated `_get_pg_default_device`): nothing a user can act on.
LIBRARY_WARNINGS = (
    "Please use DTensor instead",
    "HeuristicalStorageReservation",
    "`broadcast_buffers` is deprecated",
    "Using a non-tuple sequence for multidimensional indexing",
    "`_get_pg_default_device` will be deprecated",
    # torch 2.13, on every backward through a data_parallel table (fbgemm's dense kernel):
    # the updates are right (tests/test_distributed.py::test_adam_on_cpu_equals_torch_adam_...)
    "fbgemm::dense_embedding_codegen_lookup_function: an autograd kernel was not registered",
    # a group of InterFormer students: vmap runs the fused attention once per student
    "not yet implemented the batching rule for aten::_scaled_dot_product",
)


# Loggers that print such notes at WARNING on every start.
LIBRARY_LOGGERS = ("torchrec.distributed.planner.storage_reservations", "torch.fx._symbolic_trace")


# What the planner logs on the root logger for every data_parallel table (which has no spec).
ROOT_LOG_NOISE = ("Sharding spec not found for",)


def _not_noise(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(ROOT_LOG_NOISE)


def quiet_library_warnings() -> None:
    for message in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{re.escape(message)}")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    root = logging.getLogger()
    if _not_noise not in root.filters:
        root.addFilter(_not_noise)
