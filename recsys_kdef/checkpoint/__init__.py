"""Checkpoints: sharded save / load / resume (store), the checks before loading (checks, safe_dcp)
and where tools put outputs beside a checkpoint (paths)."""
