"""Sharding-plan inspection: `python -m recsys_kdef.plan` plans the training module offline and
prints where each table goes, what it costs, and what did not fit (docs/planning.md)."""
