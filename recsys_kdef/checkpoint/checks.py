"""Checks of a checkpoint before DCP reads it: every file holds the bytes written (sizes and
CRC-32 sums recorded in meta.json), the saved model the one being loaded into (by config and
by tensor names and shapes), so that a truncated or damaged shard or a checkpoint of another
model is an error naming the file and the difference, not a DCP or zip traceback, nor weights
silently read from damaged bytes.

The sums detect damage (a truncated copy, zeroed blocks after a crash, flipped bits), not
tampering: whoever rewrites the shards can rewrite meta.json too (safe_dcp covers what a
crafted checkpoint can do).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

from recsys_kdef.checkpoint.safe_dcp import CheckpointError, read_metadata

SHOWN = 5  # names listed per kind of difference
_CHUNK = 1 << 24


def file_sums(directory: Path, names: Iterable[str]) -> dict[str, list]:
    """{name: [bytes, CRC-32 as 8 hex digits]} of files under `directory` (names relative)."""
    out = {}
    for name in names:
        crc, size = 0, 0
        with (directory / name).open("rb") as f:
            while chunk := f.read(_CHUNK):
                crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        out[name] = [size, f"{crc:08x}"]
    return out


def check_sums(directory: Path, recorded: dict[str, list], names: Iterable[str]) -> list[str]:
    """What differs between the files `names` and the sizes and sums meta.json recorded for
    them when the checkpoint was written: one message per damaged or missing file."""
    problems = []
    for name in names:
        path = directory / name
        entry = recorded[name]
        parts = Path(name).parts
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], int)
            and isinstance(entry[1], str)
            and parts
            and not Path(name).is_absolute()
            and ".." not in parts
        ):
            problems.append(
                f"{directory}/meta.json: its record of {name!r} is not [bytes, crc32] of a "
                "file in the checkpoint; the checkpoint is damaged or was altered"
            )
            continue
        if not path.is_file():
            problems.append(f"{path}: missing (named by {directory}/meta.json)")
            continue
        size, crc = entry
        have = path.stat().st_size
        if have != size:
            problems.append(
                f"{path}: {have:,} bytes, {directory}/meta.json records {size:,} "
                "(truncated or overwritten); the checkpoint is damaged: resume from an older "
                "step-* checkpoint"
            )
            continue
        got = file_sums(directory, [name])[name][1]
        if got != crc:
            problems.append(
                f"{path}: damaged: CRC-32 {got}, written as {crc} ({directory}/meta.json); "
                "resume from an older step-* checkpoint"
            )
    return problems


def check_storage(directory: Path) -> Metadata:
    """DCP's `.metadata`, once every shard file it names holds the bytes it points into."""
    try:
        metadata = read_metadata(directory)  # never unpickles anything but DCP's own types
    except CheckpointError:
        raise
    except Exception as e:  # EOF errors of a damaged file
        raise CheckpointError(
            f"{directory / '.metadata'}: unreadable ({type(e).__name__}: {e}); the checkpoint "
            "is damaged: resume from an older step-* checkpoint or train again"
        ) from None
    needed: dict[str, int] = {}
    for info in metadata.storage_data.values():
        end = info.offset + info.length
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, size in sorted(needed.items()):
        shard = directory / name
        if not shard.is_file():
            raise CheckpointError(f"{shard}: shard file missing (named by {directory}/.metadata)")
        have = shard.stat().st_size
        if have < size:
            raise CheckpointError(
                f"{shard}: truncated shard: {have:,} bytes, {directory}/.metadata needs "
                f"{size:,}; the checkpoint is damaged: resume from an older step-* checkpoint"
            )
    return metadata


ANOTHER_MODEL = "a checkpoint of another model.num_students, tables or embedding_dim?"


def check_tensors(
    directory: Path,
    metadata: Metadata,
    model_state: dict[str, Any],
    within: str = "model.",
    hint: str = ANOTHER_MODEL,
) -> None:
    """The tensors saved under `within` (default: all of `model.`) are those of
    `model_state` (keyed without `model.`), by name and global shape; else an error ending
    with `hint` (why they may differ)."""
    saved = {
        key[len("model.") :]: tuple(item.size)
        for key, item in metadata.state_dict_metadata.items()
        if key.startswith(within) and isinstance(item, TensorStorageMetadata)
    }
    wanted = {k: tuple(v.size()) for k, v in model_state.items() if isinstance(v, torch.Tensor)}
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    shapes = [
        f"{k}: saved {list(saved[k])}, model {list(wanted[k])}"
        for k in sorted(set(saved) & set(wanted))
        if saved[k] != wanted[k]
    ]
    problems = [
        f"{len(missing)} tensors the model has are not in it ({', '.join(missing[:SHOWN])})"
        if missing
        else "",
        f"{len(extra)} saved tensors the model lacks ({', '.join(extra[:SHOWN])})" if extra else "",
        f"{len(shapes)} shapes differ ({'; '.join(shapes[:SHOWN])})" if shapes else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(
            f"{directory}: holds another model than the one being loaded: "
            + "; ".join(problems)
            + f" ({hint})"
        )


def check_same_model(directory: Path, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """The `model` section of the checkpoint's meta.json config equals this run's."""
    differences = _differences(saved.get("model", {}), config.get("model", {}), "model")
    if differences:
        raise CheckpointError(
            f"{directory}: saved by a run with another model than this config's: "
            + "; ".join(differences[:SHOWN])
            + "; resume needs the same model (its meta.json's config), or start afresh in "
            "another train.output_dir"
        )


def _differences(saved: Any, ours: Any, where: str) -> list[str]:
    """'key: checkpoint A, config B' for every leaf that differs between two config dicts."""
    if isinstance(saved, dict) and isinstance(ours, dict):
        out = []
        for key in sorted(set(saved) | set(ours), key=str):
            out += _differences(saved.get(key), ours.get(key), f"{where}.{key}")
        return out
    return [] if saved == ours else [f"{where}: checkpoint {saved!r}, config {ours!r}"]
