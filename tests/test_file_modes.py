"""Outputs get the modes a plain open() / mkdir() gives under the process umask (0666 / 0777
minus it), so a team reads each other's runs under umask 0022 and nobody does under 0077."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from recsys_kdef.config import SyntheticConfig, load_config
from recsys_kdef.data.prepare.__main__ import main as prepare_main
from recsys_kdef.data.prepare.fake import make_fake
from recsys_kdef.data.synthetic import generate
from recsys_kdef.distributed.process import destroy_distributed, init_distributed
from recsys_kdef.eval import __main__ as offline_eval
from recsys_kdef.io import atomic_path
from recsys_kdef.serve.export import copy_vocabularies, export_artifact
from recsys_kdef.train import run

UMASKS = [0o022, 0o077]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything under it, by relative path."""
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]
    }


def assert_modes(root: Path, mask: int) -> None:
    expected = {True: 0o777 & ~mask, False: 0o666 & ~mask}  # directory or file
    wrong = {
        name: oct(mode)
        for name, mode in modes_under(root).items()
        if mode != expected[(root / name).is_dir()]
    }
    assert not wrong, f"umask {mask:04o}: expected {oct(expected[False])} files: {wrong}"


@pytest.mark.parametrize("mask", UMASKS)
def test_atomic_writes_take_the_umask(tmp_path, mask):
    with umask(mask):
        with atomic_path(tmp_path / "out" / "a.json") as tmp:
            tmp.write_text("{}")
        with pytest.raises(RuntimeError), atomic_path(tmp_path / "out" / "b.json") as tmp:
            raise RuntimeError  # a failed write leaves nothing
    assert_modes(tmp_path / "out", mask)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.json"]


@pytest.mark.parametrize("mask", UMASKS)
def test_datasets_take_the_umask(tmp_path, mask):
    """Prepared Parquet (vocabularies, splits, schema) and a generated synthetic dataset."""
    raw = make_fake("criteo", tmp_path / "raw", 400, seed=1)
    small = SyntheticConfig(rows=600, num_sparse=2, num_multi=0, num_dense=1, vocab_size=20)
    with umask(mask):
        prepare_main(["criteo", "--raw", str(raw[0]), "--out", str(tmp_path / "prepared"),
                      "--no-progress"])  # fmt: skip
        generate(small, tmp_path / "synthetic")
    assert any(p.suffix == ".parquet" for p in (tmp_path / "prepared").rglob("*"))
    assert_modes(tmp_path / "prepared", mask)
    assert_modes(tmp_path / "synthetic", mask)


@pytest.mark.slow
@pytest.mark.parametrize("mask", UMASKS)
def test_a_run_its_checkpoints_evaluation_and_export_take_the_umask(tiny_dataset, tmp_path, mask):
    """metrics.json, DCP shards, meta.json, RNG files, evaluation.json, PNGs, model.pt."""
    out = tmp_path / "run"
    args = [
        "--data.path", str(tiny_dataset), "--data.batch_size", "1024",
        "--model.tower.hidden_units", "[4]", "--train.epochs", "1",
        "--train.checkpoint_every_steps", "3", "--train.progress_bar", "false",
        "--train.output_dir", str(out),
    ]  # fmt: skip
    logging.disable(logging.INFO)
    with umask(mask):
        ctx = init_distributed()
        try:
            run(load_config(args), ctx)
        finally:
            destroy_distributed()
            logging.disable(logging.NOTSET)
        offline_eval.main(["--checkpoint", str(out), "--data", str(tiny_dataset),
                           "--out", str(out / "eval"), "--no-progress"])  # fmt: skip
        export_artifact(out, out / "export")
    names = {Path(name).name for name in modes_under(out)}
    assert {"metrics.json", ".metadata", "__0_0.distcp", "meta.json", "rank-0.pt"} <= names
    assert {"evaluation.json", "roc.png", "calibration.png", "model.pt"} <= names
    assert_modes(out, mask)


@pytest.mark.parametrize("mask", UMASKS)
def test_exported_vocabularies_take_this_process_umask_not_the_datasets(tmp_path, mask):
    """A dataset prepared under the other umask: the artifact's vocab/ copy is new files."""
    other = 0o077 if mask == 0o022 else 0o022
    raw = make_fake("criteo", tmp_path / "raw", 400, seed=1)
    with umask(other):
        prepare_main(["criteo", "--raw", str(raw[0]), "--out", str(tmp_path / "prepared"),
                      "--no-progress"])  # fmt: skip
    with umask(mask):
        copy_vocabularies(tmp_path / "prepared", tmp_path / "artifact")
    assert any((tmp_path / "artifact" / "vocab").glob("*.parquet"))
    assert_modes(tmp_path / "artifact", mask)
