"""Hostile raw inputs stop `prepare` with exit code 1 and a message naming the file, the line
(where there is one), the column and the value, and leave nothing at --out; non-finite dense
values can instead be replaced and counted; a raw directory means only the format's files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recsys_kdef.data.prepare.__main__ import main as prepare_main
from recsys_kdef.data.prepare.fake import make_fake
from recsys_kdef.data.schema import Schema

ROOT = Path(__file__).resolve().parents[3]


def prepare_subprocess(fmt: str, *args: str) -> subprocess.CompletedProcess:
    """The prepare CLI in its own process, as a user runs it."""
    cmd = [sys.executable, "-m", "recsys_kdef.data.prepare", fmt, "--no-progress", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def prepare_cli(fmt: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI's main in this process (a subprocess costs ~10 s of imports): its exit code
    (sys.exit with a message exits 1) and stderr, as a CompletedProcess."""
    code, stderr = 0, ""
    try:
        prepare_main([fmt, "--no-progress", *args])
    except SystemExit as e:
        code, stderr = (1, f"error: {e.code}") if isinstance(e.code, str) else (e.code, "")
    return subprocess.CompletedProcess([fmt, *args], code, stdout="", stderr=stderr)


def csv_with_spec(tmp_path: Path, body: bytes, spec: str = "label: y\nsparse: [a]\ndense: [x]\n"):
    (tmp_path / "spec.yaml").write_text(spec)
    raw = tmp_path / "log.csv"
    raw.write_bytes(body)
    return raw, tmp_path / "spec.yaml"


def good_rows(n: int) -> bytes:
    return b"".join(f"{i % 2},t{i % 7},{i / 10}\n".encode() for i in range(n))


def assert_fails(proc: subprocess.CompletedProcess, out: Path, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-2000:])
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.prepare-*"))  # no half-built dataset


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "NaN"])
def test_a_nonfinite_dense_value_names_file_line_column_and_value(tmp_path, text):
    body = b"y,a,x\n" + good_rows(40) + f"1,t1,{text}\n".encode() + good_rows(10)
    raw, spec = csv_with_spec(tmp_path, body)
    out = tmp_path / "out"
    run = prepare_subprocess if text == "inf" else prepare_cli  # one in a real process
    proc = run("csv", "--raw", str(raw), "--out", str(out), "--spec", str(spec))
    value = "nan" if text.lower() == "nan" else text
    assert_fails(proc, out, f"{raw}:42: column 'x' is {value}", "--nonfinite-dense zero")


def test_nonfinite_dense_values_replaced_by_zero_are_counted_in_the_card(tmp_path):
    body = b"y,a,x\n" + good_rows(40) + b"1,t1,inf\n0,t2,nan\n1,t3,-inf\n" + good_rows(30)
    raw, spec = csv_with_spec(tmp_path, body)
    out = tmp_path / "out"
    proc = prepare_cli(
        "csv", "--raw", str(raw), "--out", str(out), "--spec", str(spec),
        "--nonfinite-dense", "zero", "--split", "order",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = Schema.load(out).extra["card"]
    assert card["nonfinite_dense"] == {"policy": "zero", "replaced": {"x": 3}}
    import pyarrow.parquet as pq

    x = pq.read_table(out / "train").column("x").to_numpy()
    assert list(x[40:43]) == [0.0, 0.0, 0.0] and x[39] == pytest.approx(3.9)


def test_invalid_utf8_names_the_file_and_line(tmp_path):
    body = b"y,a,x\n" + good_rows(20) + b"1,caf\xe9,1.0\n" + good_rows(5)
    raw, spec = csv_with_spec(tmp_path, body)
    out = tmp_path / "out"
    proc = prepare_cli("csv", "--raw", str(raw), "--out", str(out), "--spec", str(spec))
    assert_fails(proc, out, f"{raw}:22: invalid UTF-8 (byte 0xe9 at column 6)")


def test_invalid_utf8_in_libfm_names_the_file_and_line(tmp_path):
    lines = [b"1 1:1 7:1\n"] * 12 + [b"-1 2:1 8\xff:1\n"] + [b"-1 3:1 9:1\n"] * 3
    raw = tmp_path / "data.libfm"
    raw.write_bytes(b"".join(lines))
    out = tmp_path / "out"
    proc = prepare_cli("libfm", "--raw", str(raw), "--out", str(out))
    assert_fails(proc, out, f"{raw}:13: invalid UTF-8 (byte 0xff")


def test_an_empty_libfm_file_is_named(tmp_path):
    raw = tmp_path / "data.libfm"
    raw.write_bytes(b"\n")
    out = tmp_path / "out"
    proc = prepare_cli("libfm", "--raw", str(raw), "--out", str(out))
    assert_fails(proc, out, f"{raw}: no data rows (the file is empty); expected libFM text")


@pytest.mark.parametrize("body", [b"", b"y,a,x\n"], ids=["empty", "header-only"])
def test_an_empty_or_header_only_csv_is_named(tmp_path, body):
    raw, spec = csv_with_spec(tmp_path, body)
    out = tmp_path / "out"
    proc = prepare_cli("csv", "--raw", str(raw), "--out", str(out), "--spec", str(spec))
    assert_fails(proc, out, f"{raw}: no data rows (the file is empty or holds only a header")


def test_a_malformed_spec_names_its_file_line_and_column(tmp_path):
    raw, spec = csv_with_spec(tmp_path, b"y,a,x\n" + good_rows(20), "label: y\nsparse: [a\n")
    out = tmp_path / "out"
    proc = prepare_cli("csv", "--raw", str(raw), "--out", str(out), "--spec", str(spec))
    assert_fails(proc, out, f"{spec}:3:1: not valid YAML")
    assert "unicode string" not in proc.stderr


def test_the_same_file_for_two_splits_is_refused_naming_both(tmp_path):
    files = make_fake("frappe", tmp_path / "raw", 300, seed=1)
    out = tmp_path / "out"
    proc = prepare_cli(
        "frappe", "--split", "files", "--out", str(out),
        "--raw", f"train={files[0]}", f"valid={files[1]}", f"test={files[0]}",
    )  # fmt: skip
    assert_fails(proc, out, f"train={files[0]} and test={files[0]} are the same file")


def test_a_raw_directory_means_the_formats_own_files_only(tmp_path):
    raw = tmp_path / "raw"
    files = make_fake("frappe", raw, 600, seed=1)
    (raw / "README.txt").write_text("Frappe, from the NFM repository\n")
    out = tmp_path / "out"
    proc = prepare_cli("frappe", "--split", "files", "--raw", str(raw), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = Schema.load(out).extra["card"]
    assert [f["name"] for f in card["source"]["files"]] == [f.name for f in files]
    assert [f["split"] for f in card["source"]["files"]] == ["train", "valid", "test"]
    rows = Schema.load(out).extra["rows"]
    assert rows["valid"] == files[1].read_bytes().count(b"\n")

    files[1].unlink()  # a missing one is named
    out2 = tmp_path / "out2"
    proc = prepare_cli("frappe", "--split", "files", "--raw", str(raw), "--out", str(out2))
    assert_fails(proc, out2, f"{raw}: frappe.validation.libfm missing")


def test_a_criteo_directory_reads_train_txt_not_its_readme_or_test_txt(tmp_path):
    """Criteo Kaggle's dac.tar.gz: train.txt, the unlabelled test.txt, readme.txt."""
    raw = tmp_path / "raw"
    (train,) = make_fake("criteo", raw, 600, seed=2)
    (raw / "readme.txt").write_text("Criteo Display Advertising Challenge\n\nlines\n")
    (raw / "test.txt").write_text("\t".join(["1"] * 39) + "\n")
    (raw / "README.md").write_text("# notes\n")
    out = tmp_path / "out"
    proc = prepare_cli("criteo", "--raw", str(raw), "--out", str(out), "--min-count", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = Schema.load(out).extra["card"]
    assert [f["name"] for f in card["source"]["files"]] == [train.name]
    assert sum(Schema.load(out).extra["rows"].values()) == 600


def test_a_csv_directory_skips_files_of_other_kinds(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "README.md").write_text("a log\n")
    (raw / "README.txt").write_text("a log\n")  # a *.txt the csv format reads, but a note
    (raw / "LICENSE.csv").write_text("a,b\n1,2\n")
    (raw / "log.csv").write_bytes(b"y,a,x\n" + good_rows(60))
    spec = tmp_path / "spec.yaml"
    spec.write_text("label: y\nsparse: [a]\ndense: [x]\n")
    proc = prepare_cli("csv", "--raw", str(raw), "--out", str(tmp_path / "o"), "--spec", str(spec))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (raw / "log.csv").unlink()
    out = tmp_path / "o2"
    proc = prepare_cli("csv", "--raw", str(raw), "--out", str(out), "--spec", str(spec))
    assert_fails(proc, out, f"{raw}: no csv raw file in this directory", "README.md")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_unwritable_out_fails_before_reading_the_raw_files(tmp_path, where):
    raw, spec = csv_with_spec(tmp_path, b"y,a,x\n1,caf\xe9,1.0\n")  # bad data: never read
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    out = blocker / "data" if where == "under-a-file" else Path("/proc/recsys_kdef_test/data")
    proc = prepare_subprocess("csv", "--raw", str(raw), "--out", str(out), "--spec", str(spec))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"--out={out}" in proc.stderr and "UTF-8" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "fmt, names",
    [
        ("movielens", ["ratings.dat", "users.dat", "movies.dat"]),
        ("movielens100k", ["u.data", "u.user", "u.item"]),
    ],
)
def test_a_movielens_directory_reads_its_own_files_and_names_a_missing_one(tmp_path, fmt, names):
    raw = tmp_path / "raw"
    raw.mkdir()
    ratings, users, movies = (raw / n for n in names)
    if fmt == "movielens":
        make_fake("movielens", raw, 400, seed=2)
    else:
        ratings.write_text(
            "".join(f"{1 + i % 3}\t{1 + i % 2}\t{1 + i % 5}\t{i}\n" for i in range(40))
        )
        users.write_text("1|20|M|x|1\n2|24|F|y|1\n3|40|M|x|1\n")
        movies.write_text(
            "".join(f"{m}|F (1995)|d||u|" + "|".join(["0"] * 18 + ["1"]) + "\n" for m in (1, 2))
        )
    (raw / "README").write_text("SUMMARY & USAGE LICENSE\n")
    (raw / "u.genre").write_text("unknown|0\n")  # another release file, not read
    out = tmp_path / "out"
    proc = prepare_cli(fmt, "--raw", str(raw), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = Schema.load(out).extra["card"]
    assert sorted(f["name"] for f in card["source"]["files"]) == sorted(names)

    movies.rename(tmp_path / "aside")  # a missing side file is named
    proc = prepare_cli(fmt, "--raw", str(raw), "--out", str(tmp_path / "o2"))
    assert_fails(proc, tmp_path / "o2", f"{movies}: not found")
    (tmp_path / "aside").rename(movies)
    ratings.unlink()  # and so is a missing ratings file, with what the format reads
    proc = prepare_cli(fmt, "--raw", str(raw), "--out", str(tmp_path / "o3"))
    assert_fails(proc, tmp_path / "o3", f"{raw}: no {names[0]}; {fmt} reads {', '.join(names)}")


def test_the_same_file_twice_in_raw_is_refused_however_it_is_spelt(tmp_path):
    raw, spec = csv_with_spec(tmp_path, b"y,a,x\n" + good_rows(40))
    alias = tmp_path / "." / raw.name  # another spelling of the same path
    out = tmp_path / "out"
    proc = prepare_cli("csv", "--raw", str(raw), str(alias), "--out", str(out), "--spec", str(spec))
    assert_fails(proc, out, f"{raw} and {alias} are the same file")


def test_a_kdd12_directory_without_training_txt_names_it(tmp_path):
    raw = tmp_path / "track2"
    raw.mkdir()
    (raw / "README").write_text("KDD Cup 2012 track 2\n")
    out = tmp_path / "out"
    proc = prepare_cli("kdd12", "--raw", str(raw), "--out", str(out))
    assert_fails(proc, out, f"{raw}: no training.txt; kdd12 reads training.txt")
