"""FuxiCTR's sequence releases (AmazonElectronics_x1, TaobaoAd_x1, KuaiVideo_x1) round-trip
their fake raw files: rows, ids against FuxiCTR's vocabulary rule written out (a sequence's own
tokens extend its target's vocabulary), the last max_len ids of each sequence, the raw gAUC
group, and the reader on 2 ranks reading disjoint rows that cover the split."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recsys_kdef.data import ParquetBatchReader
from recsys_kdef.data.prepare.fake import make_fake
from recsys_kdef.data.prepare.formats.fuxictr import RELEASES
from recsys_kdef.data.reader import list_split_files
from recsys_kdef.data.schema import SPLITS, Schema
from tests.data.prepare.test_prepare_formats import read_split, run_prepare

SPECS = {r.name: r for r in RELEASES}


def raw_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def vocab_of(train: list[dict], target: str, sequences: list[str], min_count: int, tie=str):
    """FuxiCTR's rule: the target's train tokens (count >= min_count, most frequent first, ties
    by token, `tie(token)`), then each sequence's train tokens it lacks, the same way; ids
    from 1."""

    def ranked(tokens: list[str]) -> list[str]:
        counts = Counter(t for t in tokens if t != "")
        kept = [t for t, c in counts.items() if c >= min_count]
        return sorted(kept, key=lambda t: (-counts[t], tie(t)))

    vocab = {t: i + 1 for i, t in enumerate(ranked([r[target] for r in train]))}
    for seq in sequences:
        extra = ranked([t for r in train for t in r[seq].split("^") if t])
        for t in extra:
            vocab.setdefault(t, len(vocab) + 1)
    return vocab


def split_raw(raw: Path, valid_every: int = 9) -> None:
    """Move every `valid_every`-th row of train.csv to valid.csv (a split fixed by the files)."""
    with open(raw / "train.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    parts = {"train.csv": [], "valid.csv": []}
    for i, row in enumerate(rows):
        parts["valid.csv" if i % valid_every == 0 else "train.csv"].append(row)
    for name, part in parts.items():
        with open(raw / name, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([header, *part])


@pytest.mark.parametrize("fmt", sorted(SPECS))
def test_release_round_trips_its_fake_files(tmp_path, fmt):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_fake(fmt, raw, 600, seed=4)
    split_raw(raw)
    (raw / "README.txt").write_text("not data\n")  # only the release's own files are read
    schema = run_prepare(fmt, [raw], out)
    release = SPECS[fmt].spec_of_release
    rows = {s: raw_rows(raw / f"{s}.csv") for s in SPLITS}
    assert schema.extra["rows"] == {s: len(rows[s]) for s in SPLITS}
    min_count = SPECS[fmt].default_min_count
    for s in SPLITS:
        got = read_split(out, s)
        assert got["label"] == [float(r[release.label]) for r in rows[s]]
        source = SPECS[fmt].group_source
        assert got[schema.group] == [int(r[source]) for r in rows[s]]  # the raw user id
        for name in release.dense:
            assert np.allclose(got[name], [float(r[name]) for r in rows[s]])
    for target in release.sparse:
        seqs = [n for n, q in release.sequences.items() if q.of == target]
        tie = int if target == SPECS[fmt].group_source else str  # read as integers
        vocab = vocab_of(rows["train"], target, seqs, min_count, tie)
        oov = len(vocab) + 1
        field = next(f for f in schema.sparse if f.name == target)
        assert field.vocab_size == len(vocab) + 2, target
        for s in SPLITS:
            got = read_split(out, s)
            assert got[target] == [vocab.get(r[target], oov) for r in rows[s]], target
            for seq in seqs:
                n = release.sequences[seq].max_len
                want = [[vocab.get(t, oov) for t in r[seq].split("^") if t][-n:] for r in rows[s]]
                assert got[seq] == want, seq  # the LAST max_len ids, oldest first
        for seq in seqs:
            f = next(f for f in schema.sparse if f.name == seq)
            assert (f.sequence_of, f.vocab_size, f.pooling) == (target, field.vocab_size, "mean")
    longest = max(len(r[q].split("^")) for q in release.sequences for r in rows["train"])
    # Amazon's histories run past the 100 kept; the Taobao and Kuai releases were cut to their
    # max_len by their converters, and so are their fakes
    assert longest > 100 if fmt == "amazonelectronics" else longest <= 100
    assert "README.txt" not in str(schema.extra["card"]["source"]["files"])
    check_two_ranks(out, schema)


def check_two_ranks(out: Path, schema: Schema) -> None:
    """The reader on 2 ranks: disjoint rows that together are every row of the split."""
    for split in SPLITS:
        seen = Counter()
        for rank in (0, 1):
            reader = ParquetBatchReader(
                list_split_files(out, split), schema, 128, rank=rank, world_size=2, training=False
            )
            for batch in reader:
                if not batch.padding:
                    seen.update(row_keys(batch, schema))
        table = read_split(out, split)
        expected = Counter(
            (tuple(tuple(v if isinstance(v, list) else [v]) for v in vals), label)
            for *vals, label in zip(*(table[f.name] for f in schema.sparse), table["label"])
        )
        assert seen == expected, split


def row_keys(batch, schema: Schema) -> list:
    """Per row: each sparse field's ids (a sequence's positions joined back) and the label."""
    jagged = batch.sparse.to_dict()
    per_field = []
    for f in schema.sparse:
        lists = [jagged[k].to_dense() for k in f.feature_names]
        per_field.append([tuple(int(x) for p in row for x in p) for row in zip(*lists)])
    labels = batch.labels.tolist()
    return [(tuple(vals), label) for *vals, label in zip(*per_field, labels)]


@pytest.mark.parametrize("fmt", sorted(SPECS))
def test_every_release_takes_max_len_and_pooling_for_its_sequences(tmp_path, fmt):
    """--max-len (per field, or '*') keeps each history's LAST ids; --pooling sets how students
    that do not read sequences pool it; both land in the schema."""
    raw = tmp_path / "raw"
    make_fake(fmt, raw, 400, seed=3)
    full = run_prepare(fmt, [raw], tmp_path / "full")
    names = [f.name for f in full.sequences]
    first = names[0]
    cut = run_prepare(
        fmt, [raw], tmp_path / "cut", "--max-len", "*=3", f"{first}=2", "--pooling", "*=sum"
    )
    caps = {name: 2 if name == first else 3 for name in names}
    assert {f.name: (f.max_len, f.pooling) for f in cut.sequences} == {
        name: (n, "sum") for name, n in caps.items()
    }
    assert {f.pooling for f in full.sequences} == {"mean"}  # FuxiCTR's default
    for split in SPLITS:
        whole, kept = read_split(tmp_path / "full", split), read_split(tmp_path / "cut", split)
        for name, n in caps.items():
            assert kept[name] == [ids[-n:] for ids in whole[name]], (split, name)
    assert any(len(ids) > 3 for ids in read_split(tmp_path / "full", "train")[names[-1]])


def test_valid_rows_come_from_train_when_the_release_has_no_valid_file(tmp_path):
    raw = tmp_path / "raw"
    make_fake("amazonelectronics", raw, 2400, seed=2)
    schema = run_prepare("amazonelectronics", [raw], tmp_path / "out")
    rows = schema.extra["rows"]
    train, test = (len(raw_rows(raw / f"{s}.csv")) for s in ("train", "test"))
    assert rows["test"] == test and rows["train"] + rows["valid"] == train
    assert abs(rows["valid"] / train - 1 / 9) < 0.04  # --ratios 0.8,0.1,0.1: valid : train 1 : 8
    assert schema.group == "user_id" and "user_id" not in schema.sparse_names  # meta, as FuxiCTR


def write_amazon(raw: Path, lines: list[str]) -> None:
    raw.mkdir(exist_ok=True)
    header = "label,user_id,item_id,cate_id,item_history,cate_history\n"
    for name in ("train.csv", "test.csv"):
        (raw / name).write_text(header + "".join(line + "\n" for line in lines))


def test_malformed_release_files_name_the_file_and_line(tmp_path):
    good = "1,7,11,3,5^6,2^2"
    cases = {
        "2,7,11,3,5^6,2^2": "column 'label' (the label) must be 0 or 1",
        "1,x7,11,3,5^6,2^2": "column 'user_id' is not an integer",
        "1,7,11,3": "4 columns, expected 6",
    }
    for i, (bad, reason) in enumerate(cases.items()):
        raw = tmp_path / f"raw{i}"
        write_amazon(raw, [good] * 3 + [bad] + [good] * 5)
        with pytest.raises(SystemExit) as e:
            run_prepare("amazonelectronics", [raw], tmp_path / f"out{i}")
        assert f"{raw / 'train.csv'}:5" in str(e.value) and reason in str(e.value), e.value
        assert not (tmp_path / f"out{i}").exists()
    (tmp_path / "raw0" / "test.csv").unlink()
    with pytest.raises(SystemExit, match=r"raw0: no test.csv; the amazonelectronics release"):
        run_prepare("amazonelectronics", [tmp_path / "raw0"], tmp_path / "o")


def test_max_len_and_pooling_for_csv_and_movielens(tmp_path):
    """A spec's list column and --max-len / --pooling keep the LAST ids and set the pooling;
    movielens' Genres and ML-100K's --age years follow the same options."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("label: y\nsparse: [u]\nmulti_valued: {t: {separator: '|', max_len: 2}}\n")
    (tmp_path / "t.csv").write_text("u,t,y\na,p|q|r,1\nb,q,0\na,r|p,1\nb,p|q|r|s,0\n")
    order = ("--split", "order", "--ratios", "0.5,0.25,0.25")
    schema = run_prepare("csv", [tmp_path / "t.csv"], tmp_path / "o1", "--spec", str(spec), *order)
    f = next(f for f in schema.sparse if f.name == "t")
    assert f.pooling == "mean" and schema.extra["card"]["fields"]["t"]["max_len"] == 2
    got = sum((read_split(tmp_path / "o1", s)["t"] for s in SPLITS), [])
    vocab = {"q": 1, "p": 2, "r": 3}  # train rows p q r, q: q twice; ties by token
    assert got == [[1, 3], [1], [3, 2], [3, 4]]  # last 2; s unseen -> OOV 4
    assert len(vocab) + 2 == f.vocab_size
    schema = run_prepare(
        "csv", [tmp_path / "t.csv"], tmp_path / "o2", "--spec", str(spec), *order,
        "--max-len", "t=1", "--pooling", "t=sum",
    )  # fmt: skip
    assert next(f for f in schema.sparse if f.name == "t").pooling == "sum"
    assert sum((read_split(tmp_path / "o2", s)["t"] for s in SPLITS), []) == [[3], [1], [2], [4]]
    with pytest.raises(SystemExit, match=r"--pooling: \['u'\] are not list fields"):
        run_prepare("csv", [tmp_path / "t.csv"], tmp_path / "o3", "--spec", str(spec),
                    "--pooling", "u=sum")  # fmt: skip
    assert not (tmp_path / "o3").exists()


def test_ml100k_age_groups_by_default_or_raw_years(tmp_path):
    raw = tmp_path / "ml-100k"
    raw.mkdir()
    (raw / "u.data").write_text("1\t1\t5\t1\n2\t1\t4\t2\n3\t1\t1\t3\n1\t1\t2\t4\n")
    (raw / "u.user").write_text("1|20|M|x|1\n2|24|F|x|1\n3|40|M|x|1\n")
    (raw / "u.item").write_text("1|Toy Story (1995)|d||u|" + "|".join(["0"] * 18 + ["1"]) + "\n")
    order = ("--split", "order", "--ratios", "0.5,0.25,0.25")
    for age, tokens in (("groups", ["18", "18", "35", "18"]), ("years", ["20", "24", "40", "20"])):
        out = tmp_path / age
        schema = run_prepare("movielens100k", [raw], out, *order, "--age", age)
        vocab_size = next(f.vocab_size for f in schema.sparse if f.name == "Age")
        assert vocab_size == len(set(tokens[:2])) + 2  # train rows: users 1, 2
        got = sum((read_split(out, s)["Age"] for s in SPLITS), [])
        train = sorted(set(tokens[:2]), key=lambda t: (-tokens[:2].count(t), t))
        ids = {t: i + 1 for i, t in enumerate(train)}
        assert got == [ids.get(t, len(ids) + 1) for t in tokens], age


def test_movielens_genres_take_max_len_and_pooling_like_a_csv_list(tmp_path):
    """Genres is mean-pooled and uncut (max_len 0) by default, as a csv spec's list column is
    (FuxiCTR's MaskedAveragePooling); --max-len keeps its last ids and --pooling sums, as for csv."""
    raw = tmp_path / "ml"
    raw.mkdir()
    (raw / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (raw / "movies.dat").write_text("1::A (1995)::Animation|Comedy|Drama\n2::B (1990)::Drama\n")
    (raw / "ratings.dat").write_text("1::1::5::1\n2::2::1::2\n1::2::4::3\n2::1::2::4\n")
    order = ("--split", "order", "--ratios", "0.5,0.25,0.25")
    default = run_prepare("movielens", [raw], tmp_path / "o1", *order)
    genres = next(f for f in default.sparse if f.name == "Genres")
    assert genres.pooling == "mean" and default.extra["card"]["fields"]["Genres"]["max_len"] == 0
    vocab = {"Drama": 1, "Animation": 2, "Comedy": 3}  # train rows: A, B -> Drama twice
    assert sum((read_split(tmp_path / "o1", s)["Genres"] for s in SPLITS), []) == [
        [2, 3, 1], [1], [1], [2, 3, 1]
    ]  # fmt: skip
    capped = run_prepare(
        "movielens",
        [raw],
        tmp_path / "o2",
        *order,
        "--max-len",
        "Genres=2",
        "--pooling",
        "Genres=sum",
    )
    genres = next(f for f in capped.sparse if f.name == "Genres")
    assert genres.pooling == "sum" and capped.extra["card"]["fields"]["Genres"]["max_len"] == 2
    got = sum((read_split(tmp_path / "o2", s)["Genres"] for s in SPLITS), [])
    assert got == [[vocab["Comedy"], vocab["Drama"]], [1], [1], [3, 1]]
