"""Raw files in bounded chunks, each row tagged with its file and line, bad rows handled by policy.

Delimited text is read in blocks of about `chunk_bytes`, cut at line ends, and parsed by
pyarrow's CSV parser (single-threaded, so it reports line numbers of bad rows). Gzip / bz2
files are decompressed on the fly. Memory holds one block and its parsed table, never a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recsys_kdef.data.schema import DataError

_INT = r"^\s*[+-]?[0-9]+\s*$"
_FLOAT = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$|^\s*(?i:nan|[+-]?inf)\s*$"


@dataclass
class BadRows:
    """What to do with a malformed row: stop with file:line and its text, or skip and count it."""

    skip: bool = False
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def found(self, where: str, reason: str, text: str) -> None:
        message = f"{where}: {reason}: {text[:200]!r}"
        if not self.skip:
            raise DataError(f"{message} (pass --skip-bad-rows to skip and count such rows)")
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(message)


@dataclass
class Chunk:
    """Rows of one raw file: the parsed columns and, per row, its 1-based line number."""

    path: Path
    table: pa.Table
    lines: np.ndarray  # (N,) int64
    bad: BadRows
    text: bytes = b""  # the block the rows came from (for error messages); empty for Parquet
    first_line: int = 1

    def __len__(self) -> int:
        return self.table.num_rows

    def where(self, i: int) -> str:
        return f"{self.path}:{int(self.lines[i])}"

    def line_text(self, i: int) -> str:
        if not self.text:
            return str({k: v[0] for k, v in self.table.slice(i, 1).to_pydict().items()})
        ends = np.flatnonzero(np.frombuffer(self.text, np.uint8) == ord("\n"))
        n = int(self.lines[i]) - self.first_line
        start = 0 if n == 0 else int(ends[n - 1]) + 1
        end = int(ends[n]) if n < len(ends) else len(self.text)
        return self.text[start:end].decode("utf-8", "replace")

    def require(self, ok: np.ndarray | pa.Array, reason: str) -> Chunk:
        """The rows where `ok` holds; each other row stops the run or is skipped and counted."""
        ok = np.asarray(ok.to_numpy(zero_copy_only=False) if isinstance(ok, pa.Array) else ok)
        if ok.all():
            return self
        for i in np.flatnonzero(~ok):
            self.bad.found(self.where(i), reason, self.line_text(i))
        return self.take(np.flatnonzero(ok))

    def take(self, idx: np.ndarray) -> Chunk:
        return Chunk(
            self.path, self.table.take(idx), self.lines[idx], self.bad, self.text, self.first_line
        )


@dataclass(frozen=True)
class TextLayout:
    """How a delimited raw file is laid out.

    columns: names of the columns in order, or None when the first line is a header.
    types: pyarrow types of columns that must parse (others are read as strings).
    separator: a multi-character separator (MovieLens' "::") replaced by `delimiter` first.
    """

    delimiter: str
    columns: tuple[str, ...] | None = None
    types: dict[str, pa.DataType] = field(default_factory=dict)
    separator: str | None = None
    encoding: str = "utf8"


def open_raw(path: Path) -> pa.NativeFile:
    """A byte stream of `path`, decompressed if it ends in .gz / .bz2 / .zst / .lz4."""
    if not path.is_file():
        raise DataError(f"{path}: raw file not found")
    return pa.input_stream(str(path), compression="detect")


def read_text(
    path: Path, layout: TextLayout, bad: BadRows, chunk_bytes: int = 32 << 20
) -> Iterator[Chunk]:
    """Chunks of a delimited file, about `chunk_bytes` of text each."""
    with open_raw(path) as stream:
        carry, line = b"", 1
        columns = layout.columns
        if columns is None:
            header = b""
            while b"\n" not in header:
                more = stream.read(1 << 16)
                if not more:
                    break
                header += more
            head, _, carry = header.partition(b"\n")
            columns = tuple(
                _decode(head, layout.encoding, path).rstrip("\r").split(layout.delimiter)
            )
            line = 2
        while True:
            data = stream.read(chunk_bytes)
            buf = carry + data
            if not buf:
                return
            cut = buf.rfind(b"\n") + 1 if data else len(buf)
            if cut == 0:  # one line longer than a chunk: keep reading
                carry = buf
                continue
            block, carry = buf[:cut], buf[cut:]
            if layout.separator:
                block = block.replace(layout.separator.encode(), layout.delimiter.encode())
            table, lines = _parse(path, block, line, columns, layout, bad)
            if table.num_rows:
                yield Chunk(path, table, lines, bad, block, line)
            line += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


def read_parquet(path: Path, columns: list[str] | None, bad: BadRows) -> Iterator[Chunk]:
    """Chunks of a Parquet file, one row group each; "lines" are 1-based row numbers."""
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file: {e}") from e
    missing = sorted(set(columns or []) - set(file.schema_arrow.names))
    if missing:
        raise DataError(
            f"{path}: columns {missing} are missing; the file has {file.schema_arrow.names}"
        )
    row = 1
    for i in range(file.metadata.num_row_groups):
        table = file.read_row_group(i, columns=columns)
        yield Chunk(path, table, np.arange(row, row + table.num_rows, dtype=np.int64), bad)
        row += table.num_rows


def count_lines(path: Path, header: bool) -> int:
    """Data lines of a text file (a byte scan, no parsing), for splits by position."""
    n, last = 0, b"\n"
    with open_raw(path) as stream:
        while chunk := stream.read(64 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    n += last != b"\n"
    return max(n - header, 0)


def _decode(raw: bytes, encoding: str, path: Path) -> str:
    """The header line as text; invalid UTF-8 is an error naming the file and line 1."""
    if encoding.lower().replace("-", "") == "latin1":
        return raw.decode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(_utf8_message(path, 1, raw, e)) from None


def _utf8_message(path: Path, line: int, text: bytes, e: UnicodeDecodeError) -> str:
    start = text.rfind(b"\n", 0, e.start) + 1
    return (
        f"{path}:{line}: invalid UTF-8 (byte 0x{text[e.start]:02x} at column {e.start - start + 1}"
        "); expected UTF-8 text: convert the file (e.g. iconv -f latin1 -t utf-8)"
    )


def _check_utf8(path: Path, block: bytes, first_line: int, error: Exception, utf8: bool) -> None:
    """Raise a DataError for a block pyarrow could not read: the line of its first invalid
    UTF-8 byte, or pyarrow's message with the file and the block's first line."""
    try:
        block.decode("utf-8" if utf8 else "latin-1")
    except UnicodeDecodeError as e:
        line = first_line + block.count(b"\n", 0, e.start)
        raise DataError(_utf8_message(path, line, block, e)) from None
    raise DataError(f"{path} (from line {first_line}): unreadable: {error}") from None


def _parse(
    path: Path,
    block: bytes,
    first_line: int,
    columns: tuple[str, ...],
    layout: TextLayout,
    bad: BadRows,
) -> tuple[pa.Table, np.ndarray]:
    """Parse one block; returns the table and each row's line number."""
    invalid: list = []  # rows with the wrong number of columns, reported after the parse

    def on_invalid(row) -> str:
        invalid.append((row.number, row.actual_columns, row.expected_columns, row.text))
        return "skip"

    def read(types: dict[str, pa.DataType]) -> pa.Table:
        return pcsv.read_csv(
            pa.py_buffer(block),
            read_options=pcsv.ReadOptions(
                column_names=list(columns),
                use_threads=False,  # row numbers of invalid rows are only known single-threaded
                block_size=max(len(block) + 1, 1 << 20),
                encoding=layout.encoding,
            ),
            parse_options=pcsv.ParseOptions(
                delimiter=layout.delimiter,
                quote_char=False if layout.delimiter in "\t " else '"',
                ignore_empty_lines=False,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pcsv.ConvertOptions(
                column_types={c: types.get(c, pa.string()) for c in columns},
                null_values=[""],  # "nan", "NA", "null" are values (checked), not missing
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    n_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    try:
        table = read(layout.types)
        converted = True
    except pa.ArrowInvalid:  # a value that does not parse: find its rows, then convert the rest
        invalid.clear()
        try:
            table = read({})
        except pa.ArrowInvalid as e:  # not even as text: invalid UTF-8
            utf8 = layout.encoding.lower().replace("-", "") != "latin1"
            _check_utf8(path, block, first_line, e, utf8)
        converted = False
    for number, actual, expected, text in invalid:
        bad.found(
            f"{path}:{first_line + number - 1}", f"{actual} columns, expected {expected}", text
        )
    lines = _lines(first_line, n_lines, [number for number, *_ in invalid])
    chunk = Chunk(path, table, lines, bad, block, first_line)
    empty = _empty_lines(block, first_line)
    if len(empty):  # pyarrow reads an empty line as a row of nulls
        chunk = chunk.require(~np.isin(chunk.lines, empty), "empty line")
    if converted:
        return chunk.table, chunk.lines
    for name, dtype in layout.types.items():
        number = _INT if pa.types.is_integer(dtype) else _FLOAT
        value = pc.utf8_trim_whitespace(chunk.table[name])
        ok = pc.or_(pc.equal(value, ""), pc.match_substring_regex(value, number))
        expected = "an integer" if number == _INT else "a number"
        chunk = chunk.require(ok, f"column '{name}' is not {expected}")
    columns_out = []
    for name in chunk.table.column_names:
        col = chunk.table[name]
        if name in layout.types:
            value = pc.utf8_trim_whitespace(col)
            col = pc.cast(pc.if_else(pc.equal(value, ""), None, value), layout.types[name])
        columns_out.append(col)
    return pa.table(columns_out, names=chunk.table.column_names), chunk.lines


def _empty_lines(block: bytes, first_line: int) -> np.ndarray:
    """Line numbers of the empty lines ('' or a lone '\\r') in `block`."""
    if not (block.startswith((b"\n", b"\r\n")) or b"\n\n" in block or b"\n\r\n" in block):
        return np.zeros(0, np.int64)
    data = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    starts = np.concatenate([[0], ends[:-1] + 1])
    length = ends - starts
    empty = (length == 0) | ((length == 1) & (data[np.minimum(starts, len(data) - 1)] == ord("\r")))
    return first_line + np.flatnonzero(empty)


def _lines(first_line: int, n_lines: int, skipped: list[int]) -> np.ndarray:
    lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
    if skipped:
        lines = np.delete(lines, np.asarray(skipped) - 1)
    return lines


__all__ = [
    "BadRows",
    "Chunk",
    "TextLayout",
    "count_lines",
    "read_parquet",
    "read_text",
]
