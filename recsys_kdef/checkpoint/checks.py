"""Checks of a checkpoint before DCP reads it: every shard file whole, the saved model the one
being loaded into (by config and by tensor names and shapes), so that a truncated shard or a
checkpoint of another model is an error naming the file and the difference, not a DCP or
zip traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

SHOWN = 5  # names listed per kind of difference


from recsys_kdef.checkpoint.safe_dcp import CheckpointError, read_metadata  # noqa: E402


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


def check_tensors(directory: Path, metadata: Metadata, model_state: dict[str, Any]) -> None:
    """The tensors saved under `model.` are the module's, by name and global shape."""
    saved = {
        key[len("model.") :]: tuple(item.size)
        for key, item in metadata.state_dict_metadata.items()
        if key.startswith("model.") and isinstance(item, TensorStorageMetadata)
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
            + " (a checkpoint of another model.num_students, tables or embedding_dim?)"
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
