"""Dense values that are not finite numbers (inf, -inf, nan, as text in the raw file): an
error naming file, line, column and value, or (by --nonfinite-dense zero) replaced by 0 and
counted per column in the dataset card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from recsys_kdef.data.prepare.formats import Features
from recsys_kdef.data.schema import DataError

NonFinitePolicy = Literal["error", "zero"]


@dataclass
class DenseGuard:
    """Checks each chunk's dense columns; counts the values replaced (policy zero)."""

    policy: NonFinitePolicy = "error"
    replaced: dict[str, int] = field(default_factory=dict)

    def check(self, path: Path, feats: Features) -> Features:
        for name, values in feats.dense.items():
            bad = ~np.isfinite(values)  # (N,)
            if not bad.any():
                continue
            if self.policy == "error":
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{path}:{int(feats.lines[i])}: column '{name}' is {float(values[i])}, expected "
                    "a finite number (pass --nonfinite-dense zero to replace such values by 0 "
                    "and count them in the dataset card)"
                )
            values[bad] = 0.0
            self.replaced[name] = self.replaced.get(name, 0) + int(bad.sum())
        return feats

    def card(self) -> dict:
        return {"policy": self.policy, "replaced": dict(sorted(self.replaced.items()))}
