"""Output locations checked for writability before any work starts, so that a run does not
train (or evaluate, or read raw data) for hours and then fail at its first write."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


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
