"""Loading DCP checkpoints without running anything a checkpoint directory contains.

torch.distributed.checkpoint reads `<checkpoint>/.metadata` with `pickle.load` and non-tensor
entries with `torch.load(weights_only=False)`: a crafted file runs arbitrary code. Here
`.metadata` is read by an unpickler that admits only DCP's own metadata classes and torch's
Size / dtype / layout, then checked (every storage file a plain file name inside the
checkpoint, no stream transforms); DCP gets that verified object and never reads `.metadata`
itself; tensors and any non-tensor entry go through torch's weights-only unpickler.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    StorageMeta,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import ReadItem

METADATA = ".metadata"

# (module, name) pairs a DCP .metadata pickle refers to (torch 2.11 to 2.13; the older home
# of TensorProperties too). Each is a dataclass, an enum or a pure lookup: calling one with
# any argument builds data and runs nothing else.
_ALLOWED = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "StorageMeta",
        "MetadataIndex",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed._shard.sharded_tensor.metadata": {
        "TensorProperties",
        "MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},  # how torch.layout pickles: a name -> layout lookup
    "pathlib": {"Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}
_TORCH_VALUES = (torch.dtype, torch.layout, torch.memory_format)


class CheckpointError(Exception):
    """A checkpoint that is missing, incomplete, untrusted or not of this project."""


class _MetadataUnpickler(pickle.Unpickler):
    """An unpickler whose only callables are DCP's metadata classes and torch's Size."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and (
            name == "Size" or isinstance(getattr(torch, name, None), _TORCH_VALUES)
        ):
            return getattr(torch, name)
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refers to {module}.{name}, which is not part of DCP's checkpoint metadata"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("has a persistent id, which DCP's metadata never has")


def read_metadata(directory: str | Path) -> Metadata:
    """The checkpoint's DCP metadata, read without running code and checked; else an error
    naming `.metadata` and what was refused."""
    path = Path(directory) / METADATA
    try:
        with path.open("rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (DCP writes it last when saving)") from None
    except Exception as e:  # a refused global, or not a pickle at all
        raise CheckpointError(
            f"{path}: refused, not a DCP checkpoint metadata file ({e}); "
            "nothing in it was run. Use checkpoints written by recsys_kdef training"
        ) from None
    _check(metadata, path)
    return metadata


def _check(metadata: Any, path: Path) -> None:
    """Every field DCP acts on is of DCP's types, and each storage file is inside the checkpoint."""

    def refuse(what: str) -> None:
        raise CheckpointError(f"{path}: refused, {what}")

    if not isinstance(metadata, Metadata):
        refuse(f"holds a {type(metadata).__name__}, expected DCP's Metadata")
    entries = metadata.state_dict_metadata
    if not isinstance(entries, dict) or not all(
        isinstance(k, str) and isinstance(v, TensorStorageMetadata | BytesStorageMetadata)
        for k, v in entries.items()
    ):
        refuse("state_dict_metadata is not a map of names to tensor / bytes entries")
    if not isinstance(metadata.storage_data, dict):
        refuse("storage_data is not a map of items to storage files")
    for index, info in metadata.storage_data.items():
        name = getattr(info, "relative_path", None)
        if not (
            isinstance(name, str)
            and name == Path(name).name
            and not name.startswith(".")
            and (path.parent / name).is_file()
        ):
            refuse(
                f"item {getattr(index, 'fqn', index)!r} is stored in {name!r}, expected a file in {path.parent}"
            )
        offset, length = getattr(info, "offset", None), getattr(info, "length", None)
        if not (isinstance(offset, int) and isinstance(length, int) and min(offset, length) >= 0):
            refuse(
                f"item {getattr(index, 'fqn', index)!r} has offset {offset!r}, length {length!r}"
            )
        if getattr(info, "transform_descriptors", None):
            refuse(f"item {getattr(index, 'fqn', index)!r} asks for stream transforms")
    if not isinstance(metadata.storage_meta, StorageMeta | None):
        refuse("storage_meta is not DCP's StorageMeta")


def short_reason(error: Exception) -> str:
    """The line of a torch.load failure that says what was refused ('Trying to load unsupported
    GLOBAL posix.system ...'), without torch's advice to retry with weights_only=False."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (said or lines or [type(error).__name__])[0][:300]


class _VerifiedReader(FileSystemReader):
    """DCP's file reader handed metadata already read by read_metadata (never re-read)."""

    def __init__(self, directory: str | Path, metadata: Metadata) -> None:
        super().__init__(str(directory))
        self._metadata = metadata

    def read_metadata(self) -> Metadata:  # no **kwargs: DCP then never asks for per-rank files
        if self._metadata.storage_meta is None:
            self._metadata.storage_meta = StorageMeta()
        self._metadata.storage_meta.load_id = self.load_id
        return self._metadata


class _WeightsOnlyPlanner(DefaultLoadPlanner):
    """DCP's default load planner with non-tensor entries read by torch's weights-only
    unpickler (DCP's own uses weights_only=False)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            obj = torch.load(value, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"entry {fqn!r}: refused, not plain data ({short_reason(e)})"
            ) from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


def load(
    state: dict[str, Any],
    directory: str | Path,
    metadata: Metadata | None = None,
    no_dist: bool = False,
) -> None:
    """dcp.load of `state` in place from `directory`, its `.metadata` verified first (or the
    `metadata` read_metadata returned); `no_dist` loads full tensors without a process group."""
    metadata = metadata if metadata is not None else read_metadata(directory)
    try:
        dcp.load(
            state,
            storage_reader=_VerifiedReader(directory, metadata),
            planner=_WeightsOnlyPlanner(),
            no_dist=no_dist,
        )
    except CheckpointException as e:  # DCP gathers each rank's error: surface a refusal as ours
        refused = [exc for exc, _ in e.failures.values() if isinstance(exc, CheckpointError)]
        if refused:
            raise CheckpointError(f"{directory}: {refused[0]}") from None
        raise
