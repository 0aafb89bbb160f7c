"""Tools that read a checkpoint write beside it, never inside it."""

from __future__ import annotations

from pathlib import Path

from recsys_kdef.checkpoint.paths import beside_checkpoint, written_line


def test_outputs_go_beside_the_checkpoint():
    run = Path("runs/demo")
    assert beside_checkpoint(run / "checkpoints/best", "eval-test") == run / "eval-test/best"
    assert beside_checkpoint(run / "checkpoints/step-40", "diagnose") == run / "diagnose/step-40"
    assert beside_checkpoint("exports/ckpt", "eval-valid") == Path("exports/ckpt-eval-valid")
    assert written_line([Path("a/x.json"), "b/part-*.parquet (2 files)"]) == (
        "written: a/x.json, b/part-*.parquet (2 files)"
    )
