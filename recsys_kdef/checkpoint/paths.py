"""Where the tools that read a checkpoint put their outputs: beside it, never inside it, so a
checkpoint directory holds only what training wrote (and can be copied or deleted whole)."""

from __future__ import annotations

from pathlib import Path

from recsys_kdef.checkpoint.store import CHECKPOINTS


def beside_checkpoint(checkpoint: str | Path, name: str) -> Path:
    """`<run>/<name>/<checkpoint>/` for a checkpoint under `<run>/checkpoints/`, else the
    sibling `<checkpoint>-<name>/`; e.g. runs/demo/checkpoints/best, "eval-test" ->
    runs/demo/eval-test/best."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == CHECKPOINTS:
        return checkpoint.parent.parent / name / checkpoint.name
    return checkpoint.parent / f"{checkpoint.name}-{name}"


def written_line(paths: list[Path | str]) -> str:
    """One line naming every file a tool wrote, for the end of its output."""
    return "written: " + ", ".join(str(p) for p in paths)
