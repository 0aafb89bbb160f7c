"""The prepare pipeline as a whole: fake raw files of every format round-trip, bad rows stop
with file:line (or are skipped and counted), a killed run leaves no dataset, reruns are
byte-identical and idempotent, and the result reads with the trainer's reader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys_kdef.data import ParquetBatchReader
from recsys_kdef.data.prepare.__main__ import main as prepare_main
from recsys_kdef.data.prepare.fake import make_fake
from recsys_kdef.data.reader import list_split_files
from recsys_kdef.data.schema import SPLITS, Schema

ROOT = Path(__file__).resolve().parents[3]


def prepare(fmt: str, raw: list, out: Path, *options: str) -> Schema:
    prepare_main([fmt, "--raw", *map(str, raw), "--out", str(out), "--no-progress", *options])
    return Schema.load(out)


def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "fmt, raw_rows, options",
    [
        ("criteo", 3000, []),
        ("avazu", 3000, []),
        ("kdd12", 3000, ["--profile", "{raw}/userid_profile.txt"]),
        ("movielens", 3000, []),
        ("frappe", 3000, ["--split", "files"]),
    ],
)
def test_fake_raw_files_round_trip(tmp_path, fmt, raw_rows, options):
    raw = tmp_path / "raw"
    files = make_fake(fmt, raw, raw_rows, seed=1)
    inputs = [files[0]]
    if fmt == "frappe":  # its own train / validation / test files
        inputs = [f"{split}={path}" for split, path in zip(SPLITS, files)]
    options = [o.format(raw=raw) for o in options]
    out = tmp_path / "out"
    schema = prepare(fmt, inputs, out, *options)
    rows = schema.extra["rows"]
    card = schema.extra["card"]
    read = files if fmt == "frappe" else files[:1]
    lines = sum(f.read_bytes().count(b"\n") for f in read) - (fmt == "avazu")  # a header
    assert sum(rows.values()) + card["filtered_rows"] == lines
    assert card["bad_rows"]["count"] == 0
    if fmt == "frappe":
        assert [rows[s] for s in SPLITS] == [f.read_bytes().count(b"\n") for f in files]
    else:  # the seeded random split is about 8:1:1
        assert abs(rows["train"] / sum(rows.values()) - 0.8) < 0.05
    for split in SPLITS:
        table = pq.read_table(out / split)
        assert table.num_rows == rows[split]
        for f in schema.sparse:
            ids = table.column(f.name).combine_chunks()
            ids = ids.flatten() if f.multi_valued else ids
            ids = ids.to_numpy()
            assert ids.min() >= 1 and ids.max() < f.vocab_size, f.name  # 0 is padding only
    # every split reads with the trainer's reader, with 2 ranks
    reader = ParquetBatchReader(
        list_split_files(out, "valid"), schema, 64, rank=1, world_size=2, training=False
    )
    assert sum(len(b) for b in reader if not b.padding) > 0
    # vocabulary files map tokens to the ids in schema.json
    for f in schema.sparse:
        vocab = pq.read_table(out / "vocab" / f"{f.name}.parquet")
        assert vocab.num_rows == f.vocab_size - 2
        assert vocab.column("id").to_pylist() == list(range(1, f.vocab_size - 1))


def test_reruns_are_identical_and_idempotent(tmp_path, capsys):
    raw = make_fake("kdd12", tmp_path / "raw", 4000, seed=3)[0]
    a = prepare(
        "kdd12", [raw], tmp_path / "a", "--row-group-size", "500", "--rows-per-file", "1000"
    )
    b = prepare(
        "kdd12", [raw], tmp_path / "b", "--row-group-size", "500", "--rows-per-file", "1000"
    )
    assert a == b
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    assert len(list((tmp_path / "a" / "train").glob("*.parquet"))) >= 3  # files rotate
    capsys.readouterr()
    before = files_of(tmp_path / "a")
    prepare("kdd12", [raw], tmp_path / "a", "--row-group-size", "500", "--rows-per-file", "1000")
    assert "keeping it" in capsys.readouterr().out
    assert files_of(tmp_path / "a") == before
    with pytest.raises(SystemExit, match="not prepared from these files and options"):
        prepare("kdd12", [raw], tmp_path / "a", "--min-count", "2")
    assert files_of(tmp_path / "a") == before
    other = prepare("kdd12", [raw], tmp_path / "a", "--min-count", "2", "--force")
    assert other.extra["card"]["min_count"] == 2


def write_kdd12(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


GOOD = "0\t1\t7\t10\t3\t2\t1\t100\t5\t50\t60\t1"


def test_malformed_lines_stop_with_file_line_and_text(tmp_path):
    cases = {
        "0\t1\t7\t10": "4 columns, expected 12",
        "0\t1\t7\t10\tX3\t2\t1\t100\t5\t50\t60\t1": "column 'AdvertiserID' is not an integer",
        "3\t1\t7\t10\t3\t2\t1\t100\t5\t50\t60\t1": "Click <= Impression",
        "": "empty line",
    }
    for i, (bad, reason) in enumerate(cases.items()):
        raw = write_kdd12(tmp_path / f"t{i}.txt", [GOOD] * 5 + [bad] + [GOOD] * 4)
        out = tmp_path / f"out{i}"
        with pytest.raises(SystemExit) as e:
            prepare("kdd12", [raw], out)
        message = str(e.value)
        assert f"{raw}:6" in message and reason in message, message
        assert repr(bad)[1:-1][:20] in message
        assert not out.exists()


def test_skip_bad_rows_counts_them_in_the_card(tmp_path):
    lines = [GOOD] * 40
    lines[3] = "0\t1\t7"
    lines[17] = "x\t1\t7\t10\t3\t2\t1\t100\t5\t50\t60\t1"
    lines[30] = "2\t1\t7\t10\t3\t2\t1\t100\t5\t50\t60\t1"
    raw = write_kdd12(tmp_path / "t.txt", lines)
    schema = prepare("kdd12", [raw], tmp_path / "out", "--skip-bad-rows", "--split", "order")
    bad = schema.extra["card"]["bad_rows"]
    assert bad["count"] == 3
    assert [e.split(":")[1] for e in bad["examples"]] == ["4", "18", "31"]
    assert sum(schema.extra["rows"].values()) == 37


def test_a_killed_prepare_leaves_no_dataset(tmp_path):
    raw = make_fake("kdd12", tmp_path / "raw", 600_000, seed=4)[0]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "recsys_kdef.data.prepare", "kdd12", "--raw", str(raw), "--out", str(out), "--no-progress", "--row-group-size", "20000"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".killed.prepare-*/train/*.parquet")):
        time.sleep(0.005)
    assert proc.poll() is None, "prepare ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert list(tmp_path.glob(".killed.prepare-*"))  # the partial output is hidden ...
    schema = prepare("kdd12", [raw], out, "--row-group-size", "20000")
    assert not list(tmp_path.glob(".killed.prepare-*"))  # ... and cleared by the next run
    assert sum(schema.extra["rows"].values()) == 600_000


def test_user_errors_name_what_to_fix(tmp_path):
    raw = write_kdd12(tmp_path / "t.txt", [GOOD] * 3)
    with pytest.raises(SystemExit, match="would be empty"):
        prepare("kdd12", [raw], tmp_path / "o1", "--split", "order")
    with pytest.raises(SystemExit, match="raw file not found"):
        prepare("kdd12", [tmp_path / "nope.txt"], tmp_path / "o2")
    with pytest.raises(SystemExit, match="--split files needs raw files for train, valid and test"):
        prepare("kdd12", [f"train={raw}"], tmp_path / "o3", "--split", "files")
    with pytest.raises(SystemExit, match="three shares summing to 1"):
        prepare("kdd12", [raw], tmp_path / "o4", "--ratios", "0.5,0.1,0.1")
    spec = tmp_path / "spec.yaml"
    spec.write_text("label: y\nsparse: [a]\nmulti_value: {b: '|'}\n")
    with pytest.raises(SystemExit, match=r"unknown keys \['multi_value'\]"):
        prepare("csv", [raw], tmp_path / "o5", "--spec", str(spec))
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())


def test_random_split_does_not_depend_on_chunking(tmp_path):
    raw = make_fake("criteo", tmp_path / "raw", 5000, seed=5)[0]
    from recsys_kdef.data.prepare import FORMATS, PrepareOptions, RawFile
    from recsys_kdef.data.prepare import prepare as run
    from recsys_kdef.data.prepare.__main__ import build_parser

    args = build_parser().parse_args(["criteo", "--raw", str(raw), "--out", "x"])
    small = run(
        FORMATS["criteo"](args),
        [RawFile(raw)],
        tmp_path / "small",
        PrepareOptions(chunk_bytes=4096, progress=False),
    )
    big = run(
        FORMATS["criteo"](args), [RawFile(raw)], tmp_path / "big", PrepareOptions(progress=False)
    )
    assert small.schema.extra["rows"] == big.schema.extra["rows"]
    for split in SPLITS:
        a, b = pq.read_table(tmp_path / "small" / split), pq.read_table(tmp_path / "big" / split)
        assert a.equals(b)
    assert np.isclose(small.schema.extra["ctr"]["train"], big.schema.extra["ctr"]["train"])


def test_gzip_raw_files_read_as_they_are(tmp_path):
    import gzip

    raw = make_fake("criteo", tmp_path / "raw", 2000, seed=6)[0]
    packed = tmp_path / "day_0.gz"
    packed.write_bytes(gzip.compress(raw.read_bytes()))
    plain = prepare("criteo", [raw], tmp_path / "plain")
    gz = prepare("criteo", [packed], tmp_path / "gz")
    assert plain == gz
    for split in SPLITS:
        assert pq.read_table(tmp_path / "plain" / split).equals(
            pq.read_table(tmp_path / "gz" / split)
        )
