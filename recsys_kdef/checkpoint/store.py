"""Sharded checkpoints with torch.distributed.checkpoint (DCP): every rank writes its own shards.

A checkpoint is a directory `<output_dir>/checkpoints/step-000000123` (or `best`) holding:

- DCP files (`.metadata`, `__<rank>_0.distcp`): the train module's state (embedding-table
  shards, towers, batch-norm buffers) under `model.`, and the combined optimizer's state
  (fused sparse shards, dense Adam, data-parallel tables, learning rates) under `optim.`;
- `rng/rank-<r>.pt`: each rank's torch RNG state (a uint8 tensor, read with weights_only);
- `meta.json`: config, schema, model prefix, best student, trainer state (step, epoch,
  batches done in the epoch, LR/early-stopping state, history), and the size and CRC-32 of
  every other file (`files`) — plain JSON.

It is written under `.tmp-<name>` and renamed into place by rank 0 once every rank has
finished, so a visible checkpoint is always complete; loaders also require `meta.json` and
`.metadata`, read them without unpickling anything (safe_dcp: a checkpoint directory
from elsewhere cannot run code), and check every file against its recorded size and sum
before reading it (checkpoint_checks: a damaged shard is named, never read as weights). DCP reshards on load: a checkpoint written by N ranks loads on M ranks, and
without a process group into full tensors (export, ECKD teachers).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from recsys_kdef.checkpoint import safe_dcp
from recsys_kdef.checkpoint.checks import check_storage, check_sums, check_tensors, file_sums
from recsys_kdef.checkpoint.safe_dcp import METADATA, CheckpointError  # raised by every loader here
from recsys_kdef.config import ConfigError, ExperimentConfig
from recsys_kdef.config.loading import from_dict
from recsys_kdef.data.schema import DataError, Schema
from recsys_kdef.io import atomic_path
from recsys_kdef.models.ensemble import build_model

FORMAT = 2
CHECKPOINTS = "checkpoints"
BEST = "best"
META = "meta.json"
_STEP_PREFIX = "step-"


def step_name(step: int) -> str:
    return f"{_STEP_PREFIX}{step:09d}"


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _all_gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (just [value] without a process group)."""
    if _world_size() == 1:
        return [value]
    out: list[Any] = [None] * _world_size()
    dist.all_gather_object(out, value)
    return out


def is_complete(directory: Path) -> bool:
    """True for a directory that save_checkpoint finished (never for a temporary one)."""
    return (
        not directory.name.startswith(".")
        and (directory / META).is_file()
        and (directory / ".metadata").is_file()
    )


def save_checkpoint(
    directory: str | Path,
    module: nn.Module,
    optimizer: Any | None,
    meta: dict[str, Any],
) -> Path:
    """Write `module` (+ `optimizer`) shards from every rank, RNG states and `meta`; atomic.

    A collective: every rank calls it with the same `directory`. An existing checkpoint of
    that name (e.g. `best`) is replaced only once the new one is complete.
    """
    directory = Path(directory)
    tmp = directory.parent / f".tmp-{directory.name}"
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a run killed mid-save
        tmp.mkdir(parents=True)
    _barrier()
    state: dict[str, Any] = {"model": module.state_dict()}
    if optimizer is not None:
        state["optim"] = optimizer.state_dict()
    dcp.save(state, checkpoint_id=str(tmp))
    (tmp / "rng").mkdir(exist_ok=True)
    rng = f"rng/rank-{_rank()}.pt"
    torch.save({"torch": torch.get_rng_state()}, tmp / rng)
    # each rank sums the files it wrote (DCP names them __<rank>_<n>.distcp), from the page cache
    mine = [rng, *(p.name for p in tmp.glob(f"__{_rank()}_*.distcp"))]
    sums = _all_gather(file_sums(tmp, mine + ([METADATA] if _rank() == 0 else [])))
    if _rank() == 0:
        files = {k: v for part in sums for k, v in part.items()}
        others = [  # anything DCP wrote under other names
            str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and p.name != META
        ]
        files |= file_sums(tmp, sorted(set(others) - set(files)))
        record = {"format": FORMAT, "world_size": _world_size(), **meta, "files": files}
        with atomic_path(tmp / META) as f:
            f.write_text(json.dumps(record, indent=1))
        old = directory.parent / f".old-{directory.name}"
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return directory


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The meta.json of a complete checkpoint directory; an error naming what is wrong."""
    directory = Path(directory)
    if not is_complete(directory):
        raise CheckpointError(
            f"{directory}: not a complete recsys_kdef checkpoint (needs {META} and .metadata; "
            "a training run writes <train.output_dir>/checkpoints/step-*/ and best/)"
        )
    try:
        meta = json.loads((directory / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{directory / META}: not valid JSON ({e}); the checkpoint is damaged"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{directory / META}: format {found}, expected {FORMAT}")
    kinds = {"config": dict, "schema": dict, "model_prefix": str, "world_size": int}
    wrong = [k for k, kind in kinds.items() if not isinstance(meta.get(k), kind)]
    if wrong:
        raise CheckpointError(
            f"{directory / META}: {', '.join(wrong)} missing or of the wrong type; the "
            "checkpoint is damaged or not written by recsys_kdef training"
        )
    try:
        from_dict(ExperimentConfig, meta["config"])
        Schema.from_json(meta["schema"])
    except (ConfigError, DataError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{directory / META}: its config or schema is invalid: {e}") from None
    return meta


def check_files(directory: Path, meta: dict[str, Any], names: list[str] | None = None) -> None:
    """Raise CheckpointError naming the first file whose size or CRC-32 differs from meta.json's
    record (all recorded files, or `names`); checkpoints written without sums pass. A
    collective when `names` is None and a process group exists: each rank sums its share."""
    recorded = meta.get("files")
    if not isinstance(recorded, dict):
        return
    if names is None:
        share = sorted(recorded)[_rank() :: _world_size()]
        problems = [p for part in _all_gather(check_sums(directory, recorded, share)) for p in part]
    else:
        problems = check_sums(directory, recorded, [n for n in names if n in recorded])
    if problems:
        more = f" (and {len(problems) - 1} more damaged files)" if len(problems) > 1 else ""
        raise CheckpointError(problems[0] + more)


def step_checkpoints(root: str | Path) -> list[Path]:
    """The complete `step-*` checkpoints under `root` (a checkpoints directory), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{_STEP_PREFIX}*") if p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: int(p.name[len(_STEP_PREFIX) :]))


def rotate(root: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (rank 0 only; `best` is kept)."""
    if _rank() != 0:
        return
    for old in step_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from a run directory (-> its best), a checkpoints dir or itself."""
    path = Path(path)
    for candidate in (path, path / BEST, path / CHECKPOINTS / BEST):
        if is_complete(candidate):
            return candidate
    steps = step_checkpoints(path) or step_checkpoints(path / CHECKPOINTS)
    if steps:
        return steps[-1]
    raise CheckpointError(
        f"{path}: no complete checkpoint here (a training run writes "
        f"<train.output_dir>/{CHECKPOINTS}/{BEST}/ and {_STEP_PREFIX}*/)"
    )


ALTERED = f"the model {META}'s config describes: the checkpoint is damaged or was altered"
"""Why tensors differ from the model built from the checkpoint's own config."""


def load_into(
    directory: str | Path, module: nn.Module, optimizer: Any | None = None, hint: str | None = None
) -> None:
    """Load a checkpoint into a (possibly differently) sharded `module` and `optimizer`.

    A collective. DCP reads each rank's shards from wherever they were written (resharding).
    The optimizer's lazily created state (dense Adam) is materialised first so DCP has
    somewhere to load it. `hint`: why the module's tensors may differ from the saved ones
    (ALTERED when `module` was built from the checkpoint's own config).
    """
    directory = Path(directory)
    meta = read_meta(directory)
    check_files(directory, meta, [METADATA])
    metadata = check_storage(directory)  # sizes first: a truncated shard is named as such
    check_files(directory, meta)
    state: dict[str, Any] = {"model": module.state_dict()}
    if optimizer is not None:
        optimizer.init_state()
        state["optim"] = optimizer.state_dict()
    check_tensors(directory, metadata, state["model"], **({"hint": hint} if hint else {}))
    _load(state, directory)
    module.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])


def _load(state: dict[str, Any], directory: Path, *args: Any, **kwargs: Any) -> None:
    """safe_dcp.load, its failures (a shard damaged inside) as an error naming the checkpoint."""
    try:
        safe_dcp.load(state, directory, *args, **kwargs)
    except CheckpointError:
        raise
    except (Exception, dcp.api.CheckpointException) as e:
        shards = ", ".join(sorted(p.name for p in directory.glob("*.distcp")))
        raise CheckpointError(
            f"{directory}: reading its shards ({shards}) failed, the checkpoint is damaged: "
            f"{str(e).strip().splitlines()[-1][:300]}"
        ) from e


def restore_rng(directory: str | Path) -> bool:
    """Set this rank's torch RNG state from the checkpoint; False if it has none for this rank."""
    name = f"rng/rank-{_rank()}.pt"
    path = Path(directory) / name
    if not path.is_file():
        return False
    check_files(Path(directory), read_meta(directory), [name])
    try:
        torch.set_rng_state(torch.load(path, weights_only=True)["torch"])
    except Exception as e:  # refused by the weights-only unpickler, or not an RNG state
        raise CheckpointError(
            f"{path}: refused, not a torch RNG state ({safe_dcp.short_reason(e)})"
        ) from None
    return True


def load_full_model_state(directory: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """Full (unsharded) tensors of the saved module state under `prefix`, prefix removed.

    Needs no process group: DCP assembles every tensor from all ranks' shards in this process.
    The saved names and shapes must be those of the model meta.json's config describes.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    check_files(directory, meta, [METADATA])
    metadata = check_storage(directory)  # verified: safe_dcp.read_metadata
    check_files(directory, meta, sorted(meta.get("files", {})))  # this process reads them all
    model = build_model(  # tables on `meta`: names and shapes only
        from_dict(ExperimentConfig, meta["config"]).model, Schema.from_json(meta["schema"])
    )
    expected = {prefix + k: v for k, v in model.state_dict().items()}
    check_tensors(directory, metadata, expected, within=f"model.{prefix}", hint=ALTERED)
    key_prefix = f"model.{prefix}"
    template: dict[str, torch.Tensor] = {}
    for key, item in metadata.state_dict_metadata.items():
        if key.startswith(key_prefix) and isinstance(item, TensorStorageMetadata):
            template[key[len("model.") :]] = torch.empty(item.size, dtype=item.properties.dtype)
    state = {"model": template}
    _load(state, directory, metadata, no_dist=True)
    return {k[len(prefix) :]: v for k, v in state["model"].items()}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """meta.json of the checkpoint at `path` plus `state_dict`: the full model weights.

    `path` may be a run directory (its best checkpoint), a checkpoints directory or one
    checkpoint. Keys of `state_dict` are those of the model (the train module's
    `model_prefix` removed).
    """
    directory = resolve(path)
    meta = read_meta(directory)
    meta["state_dict"] = load_full_model_state(directory, meta["model_prefix"])
    meta["path"] = str(directory)
    return meta


@torch.no_grad()
def load_full_state_dict(
    module: nn.Module, full: dict[str, torch.Tensor], prefix: str = ""
) -> None:
    """Copy full tensors into the part of `module`'s (possibly sharded) state under `prefix`.

    `full` is keyed without the prefix. Each rank writes its own shards. A missing or extra
    key, or a shape that differs, is an error naming it.
    """
    target_state = {
        k[len(prefix) :]: v for k, v in module.state_dict().items() if k.startswith(prefix)
    }
    missing = sorted(set(target_state) - set(full))
    unexpected = sorted(set(full) - set(target_state))
    if missing or unexpected:
        raise KeyError(
            f"state dict mismatch under '{prefix}': missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, target in target_state.items():
        source = full[name]
        if tuple(source.shape) != tuple(target.size()):
            raise ValueError(
                f"{prefix}{name}: saved shape {tuple(source.shape)}, model has {tuple(target.size())}"
            )
        if isinstance(target, ShardedTensor):
            for shard in target.local_shards():
                region = tuple(
                    slice(o, o + s)
                    for o, s in zip(
                        shard.metadata.shard_offsets, shard.metadata.shard_sizes, strict=True
                    )
                )
                shard.tensor.copy_(source[region])
        else:
            target.copy_(source)


def resume_point(resume: str | None, output_dir: str | Path) -> Path | None:
    """The step checkpoint `train.resume` names: None (fresh start), auto (the newest under
    `output_dir`, or None if there is none), or a path (a step checkpoint, or the newest in
    a run / checkpoints directory). Every rank gets rank 0's answer."""
    if resume is None:
        return None
    if resume == "auto":
        steps = step_checkpoints(Path(output_dir) / CHECKPOINTS)
        found = steps[-1] if steps else None
    else:
        path = Path(resume)
        steps = step_checkpoints(path) or step_checkpoints(path / CHECKPOINTS)
        found = path if is_complete(path) else (steps[-1] if steps else None)
        if found is None:
            raise CheckpointError(
                f"train.resume={resume}: no complete step checkpoint there (expected a "
                f"{_STEP_PREFIX}* directory with {META}, or a run directory holding some)"
            )
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [found]
        dist.broadcast_object_list(box, src=0)
        found = box[0]
    return found
