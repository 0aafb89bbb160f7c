"""Shared fixtures: small synthetic datasets written once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/multiprocess.py

from recsys_kdef.config import SyntheticConfig  # noqa: E402
from recsys_kdef.data.synthetic import generate  # noqa: E402

TINY = SyntheticConfig(
    rows=6000,
    num_sparse=3,
    num_multi=1,
    num_dense=2,
    vocab_size=50,
    num_users=40,
    row_group_size=500,
    files_per_split=2,
    seed=7,
)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """6,000 rows, 5 sparse fields (one multi-valued), 2 dense, row groups of 500."""
    path = tmp_path_factory.mktemp("data") / "tiny"
    generate(TINY, path)
    return path


SEQ = SyntheticConfig(
    rows=6000,
    num_sparse=2,
    num_multi=0,
    num_dense=1,
    vocab_size=64,
    num_users=40,
    sequence_len=4,
    row_group_size=500,
    files_per_split=2,
    seed=9,
)


@pytest.fixture(scope="session")
def seq_dataset(tmp_path_factory) -> Path:
    """6,000 rows with a behaviour sequence hist_c1 (of c1, max_len 4), row groups of 500."""
    path = tmp_path_factory.mktemp("data") / "seq"
    generate(SEQ, path)
    return path
