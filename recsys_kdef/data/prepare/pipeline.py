"""Raw files -> a dataset directory (schema.json + train/valid/test Parquet), in two passes.

Pass 1 reads every raw row, assigns its split and counts the tokens of the training rows;
the vocabularies are fitted from those counts; pass 2 reads the raw rows again, encodes them
and writes each split. Memory holds one chunk and the token counts, never the rows. The
output is built in a hidden sibling directory and renamed into place at the end, so a run
that fails or is killed leaves nothing that looks like a dataset.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from recsys_kdef.data.prefetch import prefetch
from recsys_kdef.data.prepare.finite import DenseGuard, NonFinitePolicy
from recsys_kdef.data.prepare.formats import Features, FieldSpec, Format
from recsys_kdef.data.prepare.hashing import uniform
from recsys_kdef.data.prepare.lists import LIST_KINDS, cap_lists, list_caps, with_list_options
from recsys_kdef.data.prepare.text import BadRows
from recsys_kdef.data.prepare.vocab import HashedIds, TokenCounter, Vocabulary
from recsys_kdef.data.schema import SPLITS, DataError, DenseField, Schema, SparseField
from recsys_kdef.io import check_writable

CARD_VERSION = 1
MIN_ROW_GROUPS = 16  # per split, when it has the rows: up to 16 ranks can read it


@dataclass(kw_only=True)
class PrepareOptions:
    """How raw rows become a dataset (the format's own options live on the format)."""

    min_count: int | None = None
    """Tokens seen fewer times in the training split share the OOV id (None: the format's default)."""
    max_features: dict[str, int] = field(default_factory=dict)
    """Per field (or '*' for all): keep the most frequent tokens, at most this many ids in all."""
    max_vocab: dict[str, int] = field(default_factory=dict)
    """Per field (or '*' for all): hash tokens into a table of this many ids (no vocabulary)."""
    max_len: dict[str, int] = field(default_factory=dict)
    """Per list field (or '*' for all): keep each row's last N ids (see prepare/lists.py)."""
    pooling: dict[str, str] = field(default_factory=dict)
    """Per list field (or '*' for all): 'mean' (the default) or 'sum' (see prepare/lists.py)."""
    split: Literal["random", "files", "order"] = "random"
    """random: each raw row by a seeded hash; files: given per split (with no valid file, valid
    rows are drawn from the train files by the seeded hash, ratios[1] : ratios[0] of them);
    order: by position."""
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2024
    skip_bad_rows: bool = False
    nonfinite_dense: NonFinitePolicy = "error"
    """A dense value inf / -inf / nan: error (file, line, column, value) or zero (replaced by
    0, counted per column in the dataset card)."""
    row_group_size: int = 131_072
    rows_per_file: int = 4_194_304
    chunk_bytes: int = 32 << 20
    progress: bool = True

    def __post_init__(self) -> None:
        if len(self.ratios) != 3 or min(self.ratios) < 0 or abs(sum(self.ratios) - 1) > 1e-6:
            raise DataError(f"--ratios must be three shares summing to 1, got {self.ratios}")
        if self.min_count is not None and self.min_count < 1:
            raise DataError(f"--min-count must be >= 1, got {self.min_count}")
        for name, cap in self.max_features.items():
            if cap < 3:
                raise DataError(f"--max-features {name}={cap}: a table needs padding, OOV, a token")
        for name, cap in self.max_vocab.items():
            if cap < 2:
                raise DataError(f"--max-vocab {name}={cap}: a table needs padding and a bucket")

    def cap(self, caps: dict[str, int], name: str) -> int | None:
        return caps.get(name, caps.get("*"))
        if self.row_group_size < 1 or self.rows_per_file < 1 or self.chunk_bytes < 1024:
            raise DataError("row_group_size and rows_per_file must be >= 1, chunk_bytes >= 1024")


@dataclass(frozen=True)
class RawFile:
    path: Path
    split: str | None = None  # with split="files" ("side" in the card: a joined table)


@dataclass
class PrepareResult:
    schema: Schema
    seconds: dict[str, float]  # per pass
    raw_rows: int
    kept: bool = False  # an identical dataset was already there


def prepare(
    fmt: Format,
    raw: list[RawFile],
    out: str | Path,
    opts: PrepareOptions,
    force: bool = False,
) -> PrepareResult:
    """Write the dataset `fmt` reads from `raw` to `out`; see the module docstring."""
    out = Path(out)
    check_writable(out, "--out", DataError)  # before the raw files are read
    raw = _check_raw(raw, opts)
    fmt.inspect(raw[0].path)
    fingerprint = _fingerprint(fmt, raw, opts)
    if _keep_existing(out, fingerprint, force):
        return PrepareResult(Schema.load(out), {}, 0, kept=True)
    specs = with_list_options(fmt.fields(), opts.max_len, opts.pooling)
    sparse = [f for f in specs if f.is_sparse]
    _check_caps(opts, sparse)
    min_count = fmt.default_min_count if opts.min_count is None else opts.min_count
    splitter = Splitter(fmt, raw, opts)
    own = [f for f in sparse if f.kind != "sequence"]  # sequences share their target's ids
    hashed = {f.name: HashedIds(n) for f in own if (n := opts.cap(opts.max_vocab, f.name))}

    start = time.perf_counter()
    counted = [f for f in sparse if (f.sequence_of or f.name) not in hashed]
    counts = count_pass(fmt, raw, splitter, counted, opts)
    seconds = {"pass1": time.perf_counter() - start}
    vocabs: dict[str, Vocabulary | HashedIds] = {
        f.name: Vocabulary.fit(
            counts.counters[f.name].counts(), min_count, opts.cap(opts.max_features, f.name)
        )
        for f in own
        if f.name not in hashed
    }
    vocabs.update(hashed)
    added = {}  # FuxiCTR's share_embedding: a sequence's own tokens join its target's vocabulary
    for f in sparse:
        if f.kind == "sequence" and f.sequence_of not in hashed:
            target, before = vocabs[f.sequence_of], vocabs[f.sequence_of].size
            cap = opts.cap(opts.max_features, f.sequence_of)
            vocabs[f.sequence_of] = target.extend(counts.counters[f.name].counts(), min_count, cap)
            added[f.name] = vocabs[f.sequence_of].size - before
    vocabs.update({f.name: vocabs[f.sequence_of] for f in sparse if f.kind == "sequence"})
    counts.counters.clear()  # the counts can be large; the vocabularies are all we keep
    card = {
        "source": {
            "format": fmt.name,
            "description": fmt.description,
            "files": fingerprint["files"],
        },
        "options": fingerprint["options"],
        "raw_rows": counts.raw_rows,
        "filtered_rows": counts.filtered,
        "bad_rows": {"count": counts.bad.count, "examples": counts.bad.examples},
        "nonfinite_dense": counts.dense.card(),
        "fields": {f.name: _field_card(f, vocabs[f.name], added.get(f.name)) for f in sparse},
        "min_count": min_count,
        "version": _version(),
        "card_version": CARD_VERSION,
    }
    schema = Schema(
        sparse=tuple(
            SparseField(
                f.name,
                vocabs[f.name].size,
                f.kind in ("multi", "sequence"),
                f.pooling,
                sequence_of=f.sequence_of,
                max_len=f.max_len if f.kind == "sequence" else 0,  # a multi field: cut here
            )
            for f in sparse
        ),
        dense=tuple(DenseField(f.name) for f in specs if not f.is_sparse),
        label="label",
        group=fmt.group,
        extra={
            "rows": counts.rows,
            "ctr": {n: round(counts.positives[n] / counts.rows[n], 6) for n in SPLITS},
            "card": card,
        },
    )

    start = time.perf_counter()
    tmp = _fresh_tmp(out)  # hidden until complete, then renamed into place
    try:
        write_pass(fmt, raw, splitter, schema, vocabs, counts, tmp, opts, list_caps(specs))
        (tmp / "vocab").mkdir()
        for f in own:  # a sequence's mapping is its target's
            if (table := vocabs[f.name].to_table()) is not None:
                pq.write_table(table, tmp / "vocab" / f"{f.name}.parquet")
        schema.save(tmp)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds["pass2"] = time.perf_counter() - start
    return PrepareResult(schema, seconds, counts.raw_rows)


@dataclass
class Counts:
    """What pass 1 learns: rows and positives per split, training token counts per field,
    raw rows read, rows left out by the task, and the bad rows."""

    counters: dict[str, TokenCounter]
    bad: BadRows
    dense: DenseGuard
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    positives: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    raw_rows: int = 0
    filtered: int = 0


def count_pass(fmt: Format, raw: list[RawFile], splitter: Splitter, counted, opts) -> Counts:
    """Pass 1: each row's split, the tokens of the training rows of each `counted` field."""
    counts = Counts(
        {f.name: TokenCounter() for f in counted},
        BadRows(skip=opts.skip_bad_rows),
        DenseGuard(opts.nonfinite_dense),
    )
    bar = _bar(opts, "pass 1/2 count", None)
    per_file = [0] * len(raw)
    for index, feats in _stream(fmt, raw, counts.bad, opts, counts.dense):
        per_file[index] += feats.raw_rows
        split = splitter(index, feats.lines)
        train = pa.array(split == 0)
        for f in counted:
            tokens = feats.sparse[f.name].filter(train)
            flat = pc.list_flatten(tokens) if f.kind in LIST_KINDS else tokens
            counts.counters[f.name].add(flat)
        for s, name in enumerate(SPLITS):
            counts.rows[name] += int((split == s).sum())
            counts.positives[name] += int(feats.labels[split == s].sum())
        counts.raw_rows += feats.raw_rows
        counts.filtered += feats.filtered
        bar.update(feats.raw_rows)
    bar.close()
    for r, rows in zip(raw, per_file, strict=True):
        if rows == 0 and not counts.bad.count:
            raise DataError(
                f"{r.path}: no data rows (the file is empty or holds only a header line); "
                f"expected {fmt.description}"
            )
    empty = [name for name in SPLITS if counts.rows[name] == 0]
    if empty:
        raise DataError(
            f"split(s) {empty} would be empty ({counts.rows}); give more rows or other --ratios"
        )
    return counts


def write_pass(
    fmt, raw, splitter, schema: Schema, vocabs, counts: Counts, tmp: Path, opts, caps=None
) -> None:
    """Pass 2: encode every row (list fields cut to `caps`, {field: max_len}) and append it to
    its split's Parquet files under `tmp`. Pass 1 counted the tokens before the cut, as
    FuxiCTR fits its vocabularies on the whole lists."""
    writers = {
        name: SplitWriter(
            tmp / name, schema.arrow_schema(), _row_group(opts, counts.rows[name]), opts
        )
        for name in SPLITS
    }
    bar = _bar(opts, "pass 2/2 write", counts.raw_rows)
    dense = DenseGuard(opts.nonfinite_dense)  # pass 1 vetted the rows and the values
    for index, feats in _stream(fmt, raw, BadRows(skip=True), opts, dense):
        split = splitter(index, feats.lines)
        table = encode(cap_lists(feats, caps or {}), schema, vocabs)
        for s, name in enumerate(SPLITS):
            writers[name].write(table.filter(pa.array(split == s)))
        bar.update(feats.raw_rows)
    bar.close()
    written = {name: w.close() for name, w in writers.items()}
    if written != counts.rows:
        raise DataError(
            f"raw files changed while preparing: pass 1 saw {counts.rows}, pass 2 {written}"
        )


def encode(feats: Features, schema: Schema, vocabs: dict[str, Vocabulary | HashedIds]) -> pa.Table:
    """One chunk's features as the dataset's Arrow layout (ids, floats, label)."""
    arrays = []
    for f in schema.sparse:
        tokens, vocab = feats.sparse[f.name], vocabs[f.name]
        if f.multi_valued:
            lengths = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy(zero_copy_only=False)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            ids = vocab.encode(pc.list_flatten(tokens))
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)))
        else:
            arrays.append(pa.array(vocab.encode(tokens)))
    arrays += [pa.array(feats.dense[f.name], pa.float32()) for f in schema.dense]
    arrays.append(pa.array(feats.labels.astype(np.float32)))
    if schema.group is not None and schema.group not in schema.sparse_names:
        assert feats.groups is not None, f"the format gives no '{schema.group}' (group) column"
        arrays.append(pa.array(feats.groups, pa.int64()))  # the raw key, not a feature
    return pa.Table.from_arrays(arrays, schema=schema.arrow_schema())


class Splitter:
    """The split (0 train, 1 valid, 2 test) of each row, from its file and raw line."""

    def __init__(self, fmt: Format, raw: list[RawFile], opts: PrepareOptions) -> None:
        self.mode = opts.split
        self.seed = opts.seed
        self.cuts = np.cumsum(opts.ratios)[:2]
        self.files = raw
        self.valid_from_train = not any(r.split == "valid" for r in raw)
        self.valid_share = opts.ratios[1] / max(opts.ratios[0] + opts.ratios[1], 1e-12)
        if self.mode == "order":  # a byte scan to count lines: positions need the total
            sizes = [fmt.count_rows(r.path) for r in raw]
            self.offsets = np.concatenate([[0], np.cumsum(sizes)])
            self.total = max(int(self.offsets[-1]), 1)
            self.header = fmt.header_lines()

    def __call__(self, file_index: int, lines: np.ndarray) -> np.ndarray:
        if self.mode == "files":
            name = self.files[file_index].split
            split = np.full(len(lines), SPLITS.index(name), np.int8)
            if self.valid_from_train and name == "train":
                split[uniform(self.seed, file_index, lines) < self.valid_share] = 1
            return split
        if self.mode == "order":
            position = self.offsets[file_index] + lines - 1 - self.header
            u = position / self.total
        else:
            u = uniform(self.seed, file_index, lines)
        return np.searchsorted(self.cuts, u, side="right").astype(np.int8)


class SplitWriter:
    """Parquet files of one split: row groups of `row_group_size`, a new file every
    `rows_per_file` rows (rounded to whole row groups)."""

    def __init__(self, directory: Path, schema: pa.Schema, row_group_size: int, opts) -> None:
        directory.mkdir(parents=True)
        self.directory, self.schema, self.rg = directory, schema, row_group_size
        self.groups_per_file = max(1, -(-opts.rows_per_file // row_group_size))
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.writer: pq.ParquetWriter | None = None
        self.files = 0
        self.groups_in_file = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.rg:
            whole = pa.concat_tables(self.buffer)
            n = self.buffered // self.rg * self.rg
            for startrow in range(0, n, self.rg):
                self._group(whole.slice(startrow, self.rg))
            rest = whole.slice(n)
            self.buffer, self.buffered = [rest], rest.num_rows

    def _group(self, table: pa.Table) -> None:
        if self.writer is None or self.groups_in_file == self.groups_per_file:
            if self.writer is not None:
                self.writer.close()
            path = self.directory / f"part-{self.files:05d}.parquet"
            self.writer = pq.ParquetWriter(path, self.schema)
            self.files += 1
            self.groups_in_file = 0
        self.writer.write_table(table, row_group_size=self.rg)
        self.groups_in_file += 1
        self.rows += table.num_rows

    def close(self) -> int:
        if self.buffered:
            self._group(pa.concat_tables(self.buffer))
        if self.writer is not None:
            self.writer.close()
        return self.rows


def _stream(
    fmt: Format, raw: list[RawFile], bad: BadRows, opts, dense: DenseGuard
) -> Iterator[tuple[int, Features]]:
    """(file index, features) of every chunk, parsed one chunk ahead on a background thread."""

    def chunks() -> Iterator[tuple[int, Features]]:
        for index, r in enumerate(raw):
            for chunk in fmt.chunks(r.path, bad, opts.chunk_bytes):
                feats = dense.check(r.path, fmt.features(chunk))
                if len(feats) or feats.filtered:
                    yield index, feats

    # Arrow releases the GIL while it parses and counts: the next chunk overlaps this one
    return prefetch(chunks(), depth=2)


def _row_group(opts: PrepareOptions, rows: int) -> int:
    return max(1, min(opts.row_group_size, -(-rows // MIN_ROW_GROUPS)))


def _keep_existing(out: Path, fingerprint: dict, force: bool) -> bool:
    """True if `out` was prepared from the same files and options; an error if it is another
    dataset and `force` is not set."""
    if not out.exists():
        return False
    if _existing_fingerprint(out) == fingerprint and not force:
        print(f"{out}: already prepared from these files and options; keeping it (--force to redo)")
        return True
    if not force:
        raise DataError(
            f"{out} exists and was not prepared from these files and options; "
            "remove it or pass --force to overwrite it"
        )
    return False


def _field_card(f: FieldSpec, vocab: Vocabulary | HashedIds, added: int | None) -> dict:
    """A sparse field in the dataset card: its vocabulary (a sequence: its target and the ids
    its tokens added to the target's), and for a list field its pooling and length cap."""
    card = (
        {"sequence_of": f.sequence_of, "added_tokens": added or 0}
        if f.kind == "sequence"
        else vocab.card()
    )
    if f.kind in LIST_KINDS:
        card.update(pooling=f.pooling, max_len=f.max_len)
    return card


def _check_caps(opts: PrepareOptions, sparse: list) -> None:
    names = {f.name for f in sparse if f.kind != "sequence"}  # a sequence has its target's ids
    for option, caps in (("--max-features", opts.max_features), ("--max-vocab", opts.max_vocab)):
        unknown = sorted(set(caps) - names - {"*"})
        if unknown:
            raise DataError(
                f"{option}: no sparse field {unknown}; the fields are "
                f"{', '.join(f.name for f in sparse if f.name in names)}"
            )


def _check_raw(raw: list[RawFile], opts: PrepareOptions) -> list[RawFile]:
    if not raw:
        raise DataError("no raw files given (--raw PATH ...)")
    seen: dict[Path, RawFile] = {}
    for r in raw:
        if not r.path.is_file():
            raise DataError(f"{r.path}: raw file not found")
        first = seen.setdefault(r.path.resolve(), r)
        if first is not r:
            raise DataError(
                f"{_named(first)} and {_named(r)} are the same file; give each split (and "
                "each --raw) its own file"
            )
    if opts.split == "files":
        given = {r.split for r in raw}
        if not {"train", "test"} <= given or not given <= set(SPLITS):
            raise DataError(
                "--split files needs raw files for train, valid and test, as --raw train=PATH "
                "--raw valid=PATH --raw test=PATH (without valid files, valid rows are drawn "
                f"from the train files); got splits {sorted(map(str, given))}"
            )
    elif any(r.split is not None for r in raw):
        raise DataError("'split=PATH' raw files need --split files")
    return raw


def _named(r: RawFile) -> str:
    return f"{r.split}={r.path}" if r.split else str(r.path)


def _fingerprint(fmt: Format, raw: list[RawFile], opts: PrepareOptions) -> dict:
    """What the output depends on: the raw files (name, size, mtime) and every option."""
    options = asdict(opts)
    options.pop("progress")
    if options["nonfinite_dense"] == "error":  # the default: datasets of before stay valid
        options.pop("nonfinite_dense")
    for key in ("max_len", "pooling"):  # absent unless given: datasets of before stay valid
        if not options[key]:
            del options[key]
    options["ratios"] = list(options["ratios"])
    options["format"] = fmt.options()
    side = [RawFile(p, "side") for p in fmt.side_files([r.path for r in raw]) if p.is_file()]
    files = [
        {
            "name": r.path.name,
            "bytes": r.path.stat().st_size,
            "mtime_ns": r.path.stat().st_mtime_ns,
            "split": r.split,
        }
        for r in raw + side
    ]
    return {"files": files, "options": options}


def _existing_fingerprint(out: Path) -> dict | None:
    try:
        card = Schema.load(out).extra.get("card", {})
    except DataError:
        return None
    return {"files": card.get("source", {}).get("files"), "options": card.get("options")}


def _fresh_tmp(out: Path) -> Path:
    """A hidden sibling of `out` for this process; leftovers of killed runs are removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.prepare-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.prepare-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace(tmp: Path, out: Path) -> None:
    """Move `tmp` to `out`; an old `out` is moved aside first and deleted after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _bar(opts: PrepareOptions, desc: str, total: int | None) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=" rows",
        unit_scale=True,
        disable=not opts.progress,
        smoothing=0.1,
    )


def _version() -> str:
    try:
        return version("recsys-kdef")
    except PackageNotFoundError:
        return "unknown"
