"""Files that appear whole or not at all, versioned torch files, and output locations checked
for writability before any work starts, so that a run does not train (or evaluate, or read raw
data) for hours and then fail at its first write."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def hidden_sibling(path: str | Path) -> Path:
    """A new hidden name beside `path`, random so concurrent writers never collide.

    Unlike tempfile's mkstemp / mkdtemp (mode 0600 / 0700), what is created under it gets the
    mode a plain open() or mkdir() gives: the process umask decides who may read the output.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`: renamed to `path` if the block succeeds, else deleted.

    Readers never see half a file, and a failure leaves nothing behind. The file has the
    mode open() would give it (0666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = hidden_sibling(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_versioned(
    path: str | Path, default_name: str, fmt: int, what: str, hint: str
) -> dict[str, Any]:
    """torch.load a dict saved with {"format": fmt}; `path` may be its directory.

    Errors name the file, say it is not a `what`, and give `hint` (how to make one).
    """
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what}; {hint}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)  # tensors, plain data
    except Exception as e:  # a pickle of other objects (refused: nothing ran), or not torch's
        reason = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line]
        raise ValueError(
            f"{path}: refused, not a recsys_kdef {what} of tensors and plain data "
            f"({(reason or [type(e).__name__])[0][:300]}); nothing in it was run; {hint}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{path}: not a recsys_kdef {what} (format {fmt})")
    return data


def check_writable(path: str | Path, what: str, error: type[Exception] = ValueError) -> None:
    """Raise `error` naming `path` (`what`: the option that set it) unless a directory can be
    created there: no regular file on the way, and the nearest existing directory accepts a
    new entry (probed by creating and removing a hidden directory; nothing is left)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{what}={path}: exists and is not a directory; expected a directory to write")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise error(
            f"{what}={path}: cannot create it: {existing} is a file, not a directory; "
            "choose another location"
        )
    try:
        probe = tempfile.mkdtemp(prefix=".write-probe-", dir=existing)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise error(
            f"{what}={path}: not writable ({existing}: {reason}); choose a location this "
            "user can write"
        ) from None
    shutil.rmtree(probe, ignore_errors=True)
    if not os.access(existing, os.W_OK | os.X_OK):  # a mount that lets root in
        raise error(f"{what}={path}: {existing} is not writable by this user")
