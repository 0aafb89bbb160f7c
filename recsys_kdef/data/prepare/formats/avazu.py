"""Avazu click-through prediction: the Kaggle train.csv (header line, comma-separated).

Columns: id, click, hour (YYMMDDHH), C1, banner_pos, site_*, app_*, device_*, C14..C21.
`id` is dropped; `hour` becomes hour-of-day, weekday (Sunday = 0) and weekend, as FuxiCTR's
Avazu_x4 does (convert_hour / convert_weekday / convert_weekend); every other column is a
categorical field.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from recsys_kdef.data.prepare.formats.base import (
    Features,
    FieldSpec,
    Format,
    int8,
    require_binary,
    require_columns,
)
from recsys_kdef.data.prepare.text import Chunk, TextLayout

CATEGORICAL = [
    "C1",
    "banner_pos",
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_id",
    "device_ip",
    "device_model",
    "device_type",
    "device_conn_type",
    *[f"C{i}" for i in range(14, 22)],
]
COLUMNS = ("id", "click", "hour", *CATEGORICAL)


class Avazu(Format):
    name = "avazu"
    description = "Avazu train.csv (id, click, hour YYMMDDHH, 21 categorical columns; CSV + header)"
    default_min_count = 2
    file_patterns = ("train", "train.csv", "*.csv")
    layout = TextLayout(delimiter=",", types={"click": pa.int64()})

    def fields(self) -> list[FieldSpec]:
        return [FieldSpec(c) for c in ("hour", "weekday", "weekend", *CATEGORICAL)]

    def features(self, chunk: Chunk) -> Features:
        require_columns(chunk, COLUMNS)
        chunk = require_binary(chunk, "click")
        ok = pc.match_substring_regex(chunk.table["hour"], r"^[0-9]{8}$")
        chunk = chunk.require(ok, "column 'hour' must be YYMMDDHH")
        t = chunk.table
        stamp = pc.strptime(t["hour"], format="%y%m%d%H", unit="s")
        weekday = pc.day_of_week(stamp, week_start=7)  # Sunday = 0, as strftime('%w')
        sparse = {
            "hour": pc.hour(stamp).combine_chunks(),
            "weekday": weekday.combine_chunks(),
            "weekend": pc.is_in(weekday, pa.array([0, 6], weekday.type)).cast(pa.int8()),
        }
        sparse.update({c: t[c].combine_chunks() for c in CATEGORICAL})
        return Features(sparse, {}, int8(t["click"]), chunk.lines)
