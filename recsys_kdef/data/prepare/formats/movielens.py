"""MovieLens-1M as the ML_1M CTR task of the KDEF authors, and MovieLens-100K as the same task.

ratings.dat (UserID::MovieID::Rating::Timestamp) is streamed; users.dat
(UserID::Gender::Age::Occupation::Zip-code) and movies.dat (MovieID::Title::Genres, Latin-1)
beside it are small and read whole. Ratings of 3 are left out (counted in the card), the
label is Rating > 3. Fields: UserID, Gender, Age, Occupation, MovieID, Release (the year in
the title), Genres (multi-valued, '|'-separated, mean-pooled: the KDEF authors' ML_1M config
names `encoder: MaskedSumPooling`, a key FuxiCTR does not read, so their logged feature map
shows the default `layers.MaskedAveragePooling()`; `--pooling Genres=sum` sums, `--max-len
Genres=5` keeps 5 as their `max_len: 5` does, the last 5 here).

`--history N` adds MovieHistory, a behaviour sequence for DIN (schema `sequence_of: MovieID`):
the last N movies the same user rated > 3 strictly before this rating's timestamp, oldest
first. It needs every rating of the user, so the ratings file is read whole once for it (24 MB
for ML-1M); same-second ratings are not each other's history.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_kdef.data.prepare.formats.base import Features, FieldSpec, Format
from recsys_kdef.data.prepare.text import BadRows, Chunk, TextLayout
from recsys_kdef.data.schema import DataError

RATINGS = ("UserID", "MovieID", "Rating", "Timestamp")
YEAR = re.compile(r"\((\d{4})\)\s*$")


class MovieLens(Format):
    name = "movielens"
    description = "MovieLens-1M ratings.dat + users.dat + movies.dat ('::'-separated)"
    default_min_count = 1
    group = "UserID"
    layout = TextLayout(
        delimiter="\t", columns=RATINGS, types={c: pa.int64() for c in RATINGS}, separator="::"
    )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--history",
            type=int,
            default=0,
            metavar="N",
            help="add MovieHistory: the user's last N movies rated > 3 before each rating (DIN)",
        )

    def __init__(self, args) -> None:
        super().__init__(args)
        self.history = getattr(args, "history", 0)
        if self.history < 0:
            raise DataError(f"--history must be >= 0 (0: no MovieHistory), got {self.history}")
        self._side: dict[Path, tuple[Lookup, Lookup]] = {}
        self._histories: dict[Path, Histories] = {}

    def fields(self) -> list[FieldSpec]:
        names = ["UserID", "Gender", "Age", "Occupation", "MovieID", "Release"]
        fields = [FieldSpec(n) for n in names] + [FieldSpec("Genres", "multi")]
        if self.history:
            fields.append(FieldSpec("MovieHistory", "sequence", "mean", "MovieID", self.history))
        return fields

    def options(self) -> dict:
        return {"history": self.history} if self.history else {}  # datasets of before stay valid

    def histories(self, ratings: Path) -> Histories:
        """Every rating's MovieHistory, from the whole file (read once)."""
        if ratings not in self._histories:
            columns = {c: [] for c in RATINGS}
            for chunk in self.chunks(ratings, BadRows(skip=True), 32 << 20):  # pass 1 vets rows
                for c in RATINGS:
                    columns[c].append(pc.fill_null(chunk.table[c], -1).to_numpy())
            user, movie, rating, ts = (np.concatenate(columns[c]) for c in RATINGS)
            self._histories[ratings] = Histories(user, movie, rating, ts, self.history)
        return self._histories[ratings]

    ratings_file, side_names = "ratings.dat", ("users.dat", "movies.dat")

    def resolve(self, raw: Path) -> list[Path]:
        """A directory means its ratings file (other files there, a README, are not read); a
        missing one is named with the files this format reads."""
        if not raw.is_dir():
            return [raw]
        if not (raw / self.ratings_file).is_file():
            reads = ", ".join((self.ratings_file, *self.side_names))
            raise DataError(f"{raw}: no {self.ratings_file}; {self.name} reads {reads}")
        return [raw / self.ratings_file]

    def side_files(self, paths: list[Path]) -> list[Path]:
        return [p.parent / name for p in paths for name in self.side_names]

    def side_tables(self, ratings: Path) -> tuple[Lookup, Lookup]:
        """The users and movies files beside `ratings`, as lookups by user / movie id (read once)."""
        if ratings.parent not in self._side:
            self._side[ratings.parent] = self.read_side_files(ratings.parent)
        return self._side[ratings.parent]

    def read_side_files(self, folder: Path) -> tuple[Lookup, Lookup]:
        """users.dat and movies.dat."""
        users = _records(folder / "users.dat", "UserID::Gender::Age::Occupation::Zip-code")
        movies = _records(folder / "movies.dat", "MovieID::Title::Genres")
        years = [(m := YEAR.search(title)) and m.group(1) or "" for title in movies[1]]
        return (
            Lookup(users[0], {"Gender": users[1], "Age": users[2], "Occupation": users[3]}),
            Lookup(movies[0], {"Release": years, "Genres": [g.split("|") for g in movies[2]]}),
        )

    def features(self, chunk: Chunk) -> Features:
        users, movies = self.side_tables(chunk.path)
        t = chunk.table
        rating = pc.fill_null(t["Rating"], -1).to_numpy()
        chunk = chunk.require(np.isin(rating, [1, 2, 3, 4, 5]), "column 'Rating' must be 1..5")
        chunk = chunk.require(users.has(chunk.table["UserID"]), "UserID is not in users.dat")
        chunk = chunk.require(movies.has(chunk.table["MovieID"]), "MovieID is not in movies.dat")
        kept = chunk.table["Rating"].to_numpy() != 3
        t = chunk.table.filter(pa.array(kept))
        sparse = {"UserID": t["UserID"].combine_chunks(), "MovieID": t["MovieID"].combine_chunks()}
        sparse.update(users.take(t["UserID"]))
        sparse.update(movies.take(t["MovieID"]))
        if self.history:
            sparse["MovieHistory"] = self.histories(chunk.path).take(
                t["UserID"].to_numpy(), t["MovieID"].to_numpy()
            )
        labels = (t["Rating"].to_numpy() > 3).astype(np.int8)
        return Features(sparse, {}, labels, chunk.lines[kept], filtered=int((~kept).sum()))


AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # ML-1M's Age codes: 1 is "under 18"
GENRES_100K = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


class MovieLens100K(MovieLens):
    """ML-100K as the ML-1M task. u.user gives ages in years, ML-1M's users.dat age groups:
    `--age groups` (the default) maps a year to its group's code, as ML-1M's README defines them
    (1: under 18, 18: 18-24, 25: 25-34, 35: 35-44, 45: 45-49, 50: 50-55, 56: 56+), so the
    Age field means the same in both; `--age years` keeps the year itself (61 values)."""

    name = "movielens100k"
    description = "MovieLens-100K u.data + u.user + u.item (GroupLens' ml-100k layout)"
    layout = TextLayout(delimiter="\t", columns=RATINGS, types={c: pa.int64() for c in RATINGS})

    ratings_file, side_names = "u.data", ("u.user", "u.item")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--age",
            choices=["groups", "years"],
            default="groups",
            help="Age as ML-1M's age-group codes (default) or the raw years of u.user",
        )

    def options(self) -> dict:
        age = getattr(self.args, "age", "groups")  # absent unless changed: datasets stay valid
        return super().options() | ({"age": age} if age != "groups" else {})

    def read_side_files(self, folder: Path) -> tuple[Lookup, Lookup]:
        """u.user and u.item: ages become ML-1M's codes, the 19 genre flags a Genres list."""
        users = _records(folder / "u.user", "user id|age|gender|occupation|zip", "|")
        movies = _records(
            folder / "u.item",
            "movie id|title|release date|video date|URL|19 genre flags",
            "|",
            width=5 + len(GENRES_100K),
        )
        raw_years = getattr(self.args, "age", "groups") == "years"
        ages = [
            (a if raw_years else str(_age_code(int(a)))) if a.isdigit() else "" for a in users[1]
        ]
        years = [(m := YEAR.search(title)) and m.group(1) or "" for title in movies[1]]
        genres = [[g for g, f in zip(GENRES_100K, row) if f == "1"] for row in zip(*movies[5:])]
        return (
            Lookup(users[0], {"Gender": users[2], "Age": ages, "Occupation": users[3]}),
            Lookup(movies[0], {"Release": years, "Genres": genres}),
        )


def _age_code(age: int) -> int:
    """ML-1M's Age code of an age in years."""
    return max([1, *(b for b in AGE_BUCKETS if age >= b)])


class Histories:
    """Each rating's behaviour sequence, by (user, movie): the movies the user rated > 3
    strictly before it, the latest `max_len`, oldest first (ties in time in file order)."""

    def __init__(self, user, movie, rating, ts, max_len: int) -> None:
        order = np.lexsort((ts, user))  # by user, then time; stable, so file order in a tie
        user, movie, rating, ts = user[order], movie[order], rating[order], ts[order]
        liked = np.flatnonzero(rating > 3)  # the positives, in the same (user, time) order
        before = np.r_[0, np.cumsum(rating > 3)][:-1]  # per row: positives sorted before it
        new_user = np.r_[True, user[1:] != user[:-1]]
        new_time = new_user | np.r_[True, ts[1:] != ts[:-1]]
        # positives before the row's (user, second), minus those of earlier users
        end = before[_run_starts(new_time)]  # into `liked`: one past the history's last id
        lengths = np.minimum(end - before[_run_starts(new_user)], max_len)
        offsets = np.r_[0, np.cumsum(lengths)]
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        picks = np.repeat(end - lengths, lengths) + within  # into `liked`
        self.lists = pa.ListArray.from_arrays(
            pa.array(offsets.astype(np.int32)), pa.array(movie[liked[picks]])
        )
        self.width = int(movie.max()) + 1
        keys = user * self.width + movie
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]

    def take(self, user: np.ndarray, movie: np.ndarray) -> pa.Array:
        """The histories of these ratings (each must be in the file the histories came from)."""
        keys = user * self.width + movie
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        if not np.array_equal(self.keys[at], keys):
            raise DataError("ratings changed while reading them: a rating has no history")
        return self.lists.take(pa.array(self.order[at]))


def _run_starts(starts: np.ndarray) -> np.ndarray:
    """Per element, the index of the first element of its run (`starts` marks where runs begin)."""
    return np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))


class Lookup:
    """Attributes by integer id (a side table held in memory)."""

    def __init__(self, ids: list[str], columns: dict[str, list]) -> None:
        keys = np.array([int(i) for i in ids], np.int64)
        self.row = np.full(keys.max() + 2, -1, np.int64)
        self.row[keys] = np.arange(len(keys))
        self.table = pa.table(columns)

    def _rows(self, ids: pa.ChunkedArray) -> np.ndarray:
        ids = pc.fill_null(ids, -1).to_numpy()
        inside = (ids >= 0) & (ids < len(self.row))
        return np.where(inside, self.row[np.where(inside, ids, len(self.row) - 1)], -1)

    def has(self, ids: pa.ChunkedArray) -> np.ndarray:
        return self._rows(ids) >= 0

    def take(self, ids: pa.ChunkedArray) -> dict[str, pa.Array]:
        taken = self.table.take(pa.array(self._rows(ids)))
        return {name: taken[name].combine_chunks() for name in taken.column_names}


def _records(
    path: Path, layout: str, separator: str = "::", width: int | None = None
) -> list[list[str]]:
    """The columns of a small Latin-1 side file, or an error naming the line.

    `width` is the number of columns (default: as many as `layout` names)."""
    if not path.is_file():
        raise DataError(f"{path}: not found; MovieLens needs it beside the ratings")
    width = width or layout.count(separator) + 1
    rows = []
    for n, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(separator)
        if len(parts) != width or not parts[0].strip().isdigit():
            raise DataError(f"{path}:{n}: expected {layout}, got {line[:200]!r}")
        rows.append(parts)
    if not rows:
        raise DataError(f"{path}: empty; expected lines of {layout}")
    return [list(col) for col in zip(*rows)]
