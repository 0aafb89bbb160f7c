"""KDD Cup 2012 track 2 (search ads): training.txt and the optional userid_profile.txt.

training.txt is tab-separated, no header: Click, Impression, DisplayURL, AdID, AdvertiserID,
Depth, Position, QueryID, KeywordID, TitleID, DescriptionID, UserID (all integers). One line
aggregates `Impression` views of one ad in one session, `Click` of them clicked.

Labels: `--label click` (default, KDD12_x10): one row per line, label Click > 0.
`--label impressions`: each line expands to Impression rows, Click of them positive (the
per-view task; about 1.6x the rows).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_kdef.data.prepare.formats.base import Features, FieldSpec, Format
from recsys_kdef.data.prepare.formats.criteo import bucketize
from recsys_kdef.data.prepare.text import BadRows, Chunk, TextLayout, read_text
from recsys_kdef.data.schema import DataError

COLUMNS = (
    "Click",
    "Impression",
    "DisplayURL",
    "AdID",
    "AdvertiserID",
    "Depth",
    "Position",
    "QueryID",
    "KeywordID",
    "TitleID",
    "DescriptionID",
    "UserID",
)
NUMERIC = ["Impression", "Depth", "Position"]  # bucketised like Criteo's integers
PROFILE = ["Gender", "Age"]


class KDD12(Format):
    name = "kdd12"
    description = (
        "KDD Cup 2012 track 2 training.txt (12 integer columns; TSV) [+ userid_profile.txt]"
    )
    default_min_count = 10
    group = "UserID"
    layout = TextLayout(delimiter="\t", columns=COLUMNS, types={c: pa.int64() for c in COLUMNS})

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--label",
            choices=["click", "impressions"],
            default="click",
            help="click: a row per line, label Click > 0 (KDD12_x10); impressions: a row per view",
        )
        parser.add_argument(
            "--profile",
            type=Path,
            help="userid_profile.txt (UserID, Gender, Age), which adds the Gender and Age "
            "fields (default: the one beside training.txt, if there is one)",
        )
        parser.add_argument(
            "--no-profile", action="store_true", help="do not join a user profile file"
        )

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self._profile: tuple[np.ndarray, np.ndarray] | None = None

    def resolve(self, raw: Path) -> list[Path]:
        """A directory means its training.txt (and userid_profile.txt beside it, if there)."""
        if raw.is_dir() and not (raw / "training.txt").is_file():
            raise DataError(
                f"{raw}: no training.txt; kdd12 reads training.txt (and userid_profile.txt)"
            )
        return [raw / "training.txt" if raw.is_dir() else raw]

    def side_files(self, paths: list[Path]) -> list[Path]:
        return [] if self.args.profile is None else [self.args.profile]

    def inspect(self, path: Path) -> None:
        """Use userid_profile.txt beside training.txt unless told otherwise."""
        beside = path.parent / "userid_profile.txt"
        if self.args.profile is None and not self.args.no_profile and beside.is_file():
            self.args.profile = beside
        if self.args.no_profile:
            self.args.profile = None
        if self.args.profile is not None and not self.args.profile.is_file():
            raise DataError(f"{self.args.profile}: user profile file not found")

    def fields(self) -> list[FieldSpec]:
        names = [c for c in COLUMNS if c != "Click"]
        if self.args.label == "impressions":
            names.remove("Impression")  # one view per row: the count is no longer a feature
        if self.args.profile is not None:
            names += PROFILE
        return [FieldSpec(n) for n in names]

    def options(self) -> dict:
        profile = None if self.args.profile is None else self.args.profile.name
        return {"label": self.args.label, "profile": profile}

    def profile(self) -> tuple[np.ndarray, np.ndarray]:
        """(gender, age) indexed by UserID; 0 (unknown, as in the file) for users not listed."""
        if self._profile is None:
            layout = TextLayout(
                "\t", ("UserID", *PROFILE), {c: pa.int64() for c in ("UserID", *PROFILE)}
            )
            parts = [c.table for c in read_text(self.args.profile, layout, BadRows())]
            if not parts:
                raise DataError(f"{self.args.profile}: empty user profile file")
            table = pa.concat_tables(parts)
            users = pc.fill_null(table["UserID"], 0).to_numpy()
            if users.min() < 0:
                raise DataError(f"{self.args.profile}: negative UserID {users.min()}")
            arrays = []
            for c in PROFILE:
                a = np.zeros(users.max() + 1, np.int64)
                a[users] = pc.fill_null(table[c], 0).to_numpy()
                arrays.append(a)
            self._profile = (arrays[0], arrays[1])
        return self._profile

    def features(self, chunk: Chunk) -> Features:
        t = chunk.table
        click = pc.fill_null(t["Click"], -1).to_numpy()
        views = pc.fill_null(t["Impression"], -1).to_numpy()
        chunk = chunk.require(
            (click >= 0) & (views >= 1) & (click <= views),
            "needs 0 <= Click <= Impression, Impression >= 1",
        )
        ids = ~np.zeros(len(chunk), bool)
        for c in COLUMNS[2:]:
            ids &= chunk.table[c].is_valid().to_numpy(zero_copy_only=False)
        chunk = chunk.require(ids, "every column must hold an integer")
        t = chunk.table
        click, views = t["Click"].to_numpy(), t["Impression"].to_numpy()
        if self.args.label == "impressions":
            rows = np.repeat(np.arange(len(chunk)), views)
            first = np.repeat(np.cumsum(views) - views, views)
            labels = ((np.arange(len(rows)) - first) < click[rows]).astype(np.int8)
        else:
            rows = np.arange(len(chunk))
            labels = (click > 0).astype(np.int8)
        sparse = {}
        for f in self.fields():
            if f.name in PROFILE:
                table = self.profile()[PROFILE.index(f.name)]
                users = t["UserID"].to_numpy()[rows]
                known = users < len(table)
                sparse[f.name] = pa.array(
                    np.where(known, table[np.minimum(users, len(table) - 1)], 0)
                )
            elif f.name in NUMERIC:
                sparse[f.name] = pa.array(bucketize(t[f.name].to_numpy()[rows]))
            else:
                sparse[f.name] = pa.array(t[f.name].to_numpy()[rows])
        return Features(sparse, {}, labels, chunk.lines[rows], source_rows=len(chunk))
