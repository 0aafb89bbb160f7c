"""Each raw format, written by hand in its exact layout, round-trips: the ids in the Parquet
files equal an independent re-computation (vocabulary on the training rows, most frequent
first, min_count, OOV, padding 0), labels, bucketing, derived and multi-valued fields."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recsys_kdef.data.prepare.__main__ import main as prepare_main
from recsys_kdef.data.schema import Schema


def run_prepare(fmt: str, raw: list, out: Path, *options: str) -> Schema:
    prepare_main([fmt, "--raw", *map(str, raw), "--out", str(out), "--no-progress", *options])
    return Schema.load(out)


def read_split(out: Path, split: str) -> dict[str, list]:
    files = sorted((out / split).glob("*.parquet"))
    columns: dict[str, list] = {}
    for f in files:
        for k, v in pq.read_table(f).to_pydict().items():
            columns.setdefault(k, []).extend(v)
    return columns


def expected_vocab(train_tokens: list, min_count: int) -> dict:
    """FuxiCTR's rule, written out: kept tokens by count desc then token, ids from 1; missing
    tokens (None, "") are never in it."""
    counts = Counter(t for t in train_tokens if t is not None and t != "")
    kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return {t: i + 1 for i, t in enumerate(kept)}


def encode(tokens: list, vocab: dict) -> list[int]:
    oov = len(vocab) + 1
    return [vocab.get(t, oov) for t in tokens]


def check_field(out: Path, schema: Schema, name: str, tokens: list, n_train: int, min_count: int):
    """Rows 0..n_train-1 are train (order split); the ids of every split match the tokens."""
    vocab = expected_vocab(tokens[:n_train], min_count)
    field = next(f for f in schema.sparse if f.name == name)
    assert field.vocab_size == len(vocab) + 2, name
    got = []
    for split in ("train", "valid", "test"):
        got += read_split(out, split)[name]
    assert got == encode(tokens, vocab), name


def bucket(x: int) -> int:
    return int(math.floor(math.log(x) ** 2)) if x > 2 else x


def test_criteo_bucketised_and_dense(tmp_path):
    rows = [
        ["1", "5", "", "0", "-1", *["1"] * 9, "aa", "bb", "", *["cc"] * 23],
        ["0", "5", "3", "100", "2", *["1"] * 9, "aa", "dd", "ee", *["cc"] * 23],
        ["0", "", "3", "7", "2", *["1"] * 9, "aa", "bb", "ee", *["cc"] * 23],
        ["1", "40", "3", "7", "1000", *["1"] * 9, "zz", "bb", "", *["cc"] * 23],
        ["0", "5", "9", "7", "2", *["1"] * 9, "aa", "bb", "ee", *["cc"] * 23],
        ["1", "5", "3", "8", "2", *["1"] * 9, "aa", "yy", "ee", *["cc"] * 23],
        ["0", "5", "3", "7", "2", *["1"] * 9, "aa", "bb", "ee", *["cc"] * 23],
        ["0", "5", "3", "7", "2", *["1"] * 9, "qq", "bb", "ee", *["cc"] * 23],
        ["1", "6", "3", "7", "2", *["1"] * 9, "aa", "bb", "ee", *["cc"] * 23],
        ["0", "5", "3", "7", "2", *["1"] * 9, "aa", "bb", "ee", *["cc"] * 23],
    ]
    raw = tmp_path / "train.txt"
    raw.write_text("".join("\t".join(r) + "\n" for r in rows))
    out = tmp_path / "criteo"
    schema = run_prepare(
        "criteo", [raw], out, "--split", "order", "--ratios", "0.6,0.2,0.2", "--min-count", "2"
    )
    assert schema.extra["rows"] == {"train": 6, "valid": 2, "test": 2}
    assert len(schema.sparse) == 39 and not schema.dense
    for j, name in enumerate(["I1", "I2", "I3", "I4"]):
        tokens = [bucket(int(r[1 + j])) if r[1 + j] else None for r in rows]  # empty: OOV
        check_field(out, schema, name, tokens, 6, 2)
    for j, name in enumerate(["C1", "C2", "C3"]):
        check_field(out, schema, name, [r[14 + j] for r in rows], 6, 2)
    labels = sum((read_split(out, s)["label"] for s in ("train", "valid", "test")), [])
    assert labels == [float(r[0]) for r in rows]

    dense = run_prepare(
        "criteo", [raw], tmp_path / "dense", "--split", "order", "--numeric", "dense"
    )
    assert [f.name for f in dense.dense] == [f"I{i}" for i in range(1, 14)]
    i4 = read_split(tmp_path / "dense", "train")["I4"]
    assert i4 == pytest.approx([math.log1p(max(int(r[4]), 0)) for r in rows[:8]], rel=1e-6)


def test_avazu_hour_becomes_hour_weekday_weekend_and_id_is_dropped(tmp_path):
    header = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
    hours = ["14102100", "14102513", "14102623", "14102100", "14102207"]  # Tue, Sat, Sun, Tue, Wed
    lines = [f"{i}9{i},{i % 2},{h}," + ",".join(["x"] * 21) for i, h in enumerate(hours)]
    raw = tmp_path / "train.csv"
    raw.write_text(header + "\n" + "\n".join(lines) + "\n")
    out = tmp_path / "avazu"
    schema = run_prepare(
        "avazu", [raw], out, "--split", "order", "--ratios", "0.6,0.2,0.2", "--min-count", "1"
    )
    assert "id" not in schema.sparse_names and "click" not in schema.sparse_names
    assert schema.sparse_names[:3] == ["hour", "weekday", "weekend"]
    check_field(out, schema, "hour", [0, 13, 23, 0, 7], 3, 1)
    check_field(out, schema, "weekday", [2, 6, 0, 2, 3], 3, 1)  # Sunday = 0, as strftime('%w')
    check_field(out, schema, "weekend", [0, 1, 1, 0, 0], 3, 1)


def kdd12_lines() -> list[list[int]]:
    # Click, Impression, DisplayURL, AdID, AdvertiserID, Depth, Position, QueryID, KeywordID, TitleID, DescriptionID, UserID
    return [
        [0, 1, 7, 10, 3, 2, 1, 100, 5, 50, 60, 1],
        [2, 3, 7, 11, 3, 3, 2, 101, 5, 50, 61, 2],
        [0, 2, 8, 10, 4, 2, 2, 100, 6, 51, 60, 1],
        [1, 1, 7, 10, 3, 1, 1, 102, 5, 50, 60, 9],
        [0, 1, 7, 12, 3, 2, 1, 100, 5, 52, 62, 3],
    ]


def test_kdd12_click_label_profile_join_and_bucketing(tmp_path):
    lines = kdd12_lines()
    raw = tmp_path / "training.txt"
    raw.write_text("".join("\t".join(map(str, r)) + "\n" for r in lines))
    profile = tmp_path / "userid_profile.txt"
    profile.write_text("1\t1\t3\n2\t2\t5\n3\t0\t1\n")  # user 9 has no profile
    out = tmp_path / "kdd12"
    # a directory means its training.txt; the profile beside it is joined without --profile
    schema = run_prepare(
        "kdd12", [tmp_path], out, "--split", "order", "--ratios", "0.6,0.2,0.2", "--min-count", "1",
    )  # fmt: skip
    files = schema.extra["card"]["source"]["files"]
    assert [(f["name"], f["split"]) for f in files] == [
        ("training.txt", None),
        ("userid_profile.txt", "side"),
    ]
    assert schema.group == "UserID"
    assert schema.sparse_names == [
        "Impression", "DisplayURL", "AdID", "AdvertiserID", "Depth", "Position", "QueryID",
        "KeywordID", "TitleID", "DescriptionID", "UserID", "Gender", "Age",
    ]  # fmt: skip
    labels = sum((read_split(out, s)["label"] for s in ("train", "valid", "test")), [])
    assert labels == [float(r[0] > 0) for r in lines]
    check_field(out, schema, "AdID", [r[3] for r in lines], 3, 1)
    check_field(out, schema, "Impression", [bucket(r[1]) for r in lines], 3, 1)
    check_field(out, schema, "Gender", [1, 2, 1, 0, 0], 3, 1)
    check_field(out, schema, "Age", [3, 5, 3, 0, 1], 3, 1)
    bare = run_prepare(
        "kdd12",
        [raw],
        tmp_path / "bare",
        "--no-profile",
        "--split",
        "order",
        "--ratios",
        "0.6,0.2,0.2",
    )
    assert bare.sparse_names == schema.sparse_names[:-2]


def test_kdd12_impressions_expand_to_one_row_per_view(tmp_path):
    lines = kdd12_lines()
    raw = tmp_path / "training.txt"
    raw.write_text("".join("\t".join(map(str, r)) + "\n" for r in lines))
    out = tmp_path / "views"
    schema = run_prepare(
        "kdd12", [raw], out, "--label", "impressions", "--split", "order", "--ratios", "0.6,0.2,0.2"
    )
    assert "Impression" not in schema.sparse_names
    labels = sum((read_split(out, s)["label"] for s in ("train", "valid", "test")), [])
    assert len(labels) == sum(r[1] for r in lines)
    assert sum(labels) == sum(r[0] for r in lines)
    # the views of one line stay in its split: line 2 (3 views, 2 clicks) is all in train
    assert schema.extra["rows"] == {"train": 6, "valid": 1, "test": 1}


def test_movielens100k_layout_gives_the_ml1m_task(tmp_path):
    """ml-100k's u.data / u.user / u.item prepare to the same rows as the ML-1M layout of the
    same ratings (ages bucketed to ML-1M's codes, genre flags to Genres lists)."""
    genres = (
        "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama "
        "Fantasy Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
    ).split()
    movies = {
        1: ("Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
        2: ("Jumanji (1995)", ["Adventure", "Children's", "Fantasy"]),
        3: ("Heat (1995)", ["Action", "Crime", "Thriller"]),
    }
    users = {
        1: (10, "F", "student", 1),
        2: (56, "M", "writer", 56),
        3: (30, "M", "other", 25),
        4: (47, "F", "artist", 45),
        5: (33, "F", "artist", 25),  # same bucket as user 3: the bucketing is seen in the ids
    }
    ratings = [
        (1, 1, 5),
        (1, 2, 3),
        (2, 1, 4),
        (5, 1, 4),
        (2, 3, 1),
        (3, 2, 2),
        (4, 3, 5),
        (1, 3, 4),
        (4, 2, 3),
        (3, 1, 5),
        (2, 2, 2),
    ]
    ml100k, ml1m = tmp_path / "ml-100k", tmp_path / "ml-1m"
    ml100k.mkdir(), ml1m.mkdir()
    (ml100k / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t881250949\n" for u, m, r in ratings))
    (ml100k / "u.user").write_text(
        "".join(f"{u}|{a}|{g}|{o}|55117\n" for u, (a, g, o, _) in users.items())
    )
    (ml100k / "u.item").write_text(
        "".join(
            f"{m}|{t}|01-Jan-1995||http://x|"
            + "|".join("1" if g in gs else "0" for g in genres)
            + "\n"
            for m, (t, gs) in movies.items()
        )
    )
    (ml1m / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::881250949\n" for u, m, r in ratings))
    (ml1m / "users.dat").write_text(
        "".join(f"{u}::{g}::{code}::{o}::55117\n" for u, (_, g, o, code) in users.items())
    )
    (ml1m / "movies.dat").write_text(
        "".join(f"{m}::{t}::{'|'.join(gs)}\n" for m, (t, gs) in movies.items())
    )
    options = ("--split", "order", "--ratios", "0.6,0.2,0.2")
    a = run_prepare("movielens100k", [ml100k], tmp_path / "a", *options)
    b = run_prepare("movielens", [ml1m], tmp_path / "b", *options)
    assert a.extra["card"]["filtered_rows"] == 2
    assert [f.name for f in a.sparse] == [f.name for f in b.sparse]
    for split in ("train", "valid", "test"):
        assert read_split(tmp_path / "a", split) == read_split(tmp_path / "b", split)
    labels = sum((read_split(tmp_path / "a", s)["label"] for s in ("train", "valid", "test")), [])
    assert labels == [float(r > 3) for _, _, r in ratings if r != 3]


def test_movielens_drops_rating_3_and_reads_side_files(tmp_path):
    (tmp_path / "users.dat").write_text(
        "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"
    )
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
        "3::Cité des enfants perdus, La (City of Lost Children, The) (1995)::Adventure|Sci-Fi\n".encode(
            "latin-1"
        )
    )
    ratings = [
        (1, 1, 5),
        (1, 2, 3),
        (2, 1, 4),
        (2, 3, 1),
        (3, 2, 2),
        (3, 3, 5),
        (1, 3, 4),
        (2, 2, 3),
    ]
    (tmp_path / "ratings.dat").write_text(
        "".join(f"{u}::{m}::{r}::978300760\n" for u, m, r in ratings)
    )
    out = tmp_path / "ml"
    schema = run_prepare(
        "movielens", [tmp_path], out, "--split", "order", "--ratios", "0.5,0.25,0.25"
    )
    assert schema.extra["card"]["filtered_rows"] == 2
    assert schema.group == "UserID"
    kept = [r for r in ratings if r[2] != 3]
    labels = sum((read_split(out, s)["label"] for s in ("train", "valid", "test")), [])
    assert labels == [float(r[2] > 3) for r in kept]
    genres = next(f for f in schema.sparse if f.name == "Genres")
    assert genres.multi_valued and genres.pooling == "mean"  # FuxiCTR's default, as logged
    titles = {
        1: "Animation|Children's|Comedy",
        2: "Adventure|Children's|Fantasy",
        3: "Adventure|Sci-Fi",
    }
    # the order split is by raw line (rating-3 lines count): lines 1-4 train, 5-6 valid, 7-8 test
    train_tokens = [g for r in ratings[:4] if r[2] != 3 for g in titles[r[1]].split("|")]
    vocab = expected_vocab(train_tokens, 1)
    got = sum((read_split(out, s)["Genres"] for s in ("train", "valid", "test")), [])
    assert got == [encode(titles[r[1]].split("|"), vocab) for r in kept]
    check_field(out, schema, "Release", ["1995"] * len(kept), 3, 1)
    check_field(out, schema, "Gender", [{1: "F", 2: "M", 3: "M"}[r[0]] for r in kept], 3, 1)


def test_frappe_libfm_fields_by_position(tmp_path):
    splits = {}
    for name, lines in {
        "train": ["1 0:1 10:1", "-1 1:1 10:1", "1 0:1 11:1"],
        "valid": ["-1 2:1 10:1"],
        "test": ["1 0:1 12:1"],
    }.items():
        splits[name] = tmp_path / f"{name}.libfm"
        splits[name].write_text("\n".join(lines) + "\n")
    out = tmp_path / "fm"
    raw = [f"{k}={v}" for k, v in splits.items()]
    schema = run_prepare("libfm", raw, out, "--split", "files", "--fields", "user,item")
    assert schema.sparse_names == ["user", "item"]
    check_field(out, schema, "user", ["0", "1", "0", "2", "0"], 3, 1)
    check_field(out, schema, "item", ["10", "10", "11", "10", "12"], 3, 1)
    labels = sum((read_split(out, s)["label"] for s in ("train", "valid", "test")), [])
    assert labels == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_generic_csv_and_parquet_with_a_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "label: clicked\nsparse: [user, item]\nmulti_valued: {tags: '|'}\ndense: [price]\ngroup: user\n"
    )
    raw = tmp_path / "log.csv"
    raw.write_text(
        "user,item,tags,price,clicked,ignored\n"
        "u1,i1,a|b,1.5,1,x\nu2,i1,b,,0,x\nu1,i2,,2.0,0,x\nu3,i3,a|c|a,0.5,1,x\n"
    )
    out = tmp_path / "csv"
    schema = run_prepare(
        "csv", [raw], out, "--spec", str(spec), "--split", "order", "--ratios", "0.5,0.25,0.25"
    )
    assert schema.group == "user" and schema.dense_names == ["price"]
    check_field(out, schema, "user", ["u1", "u2", "u1", "u3"], 2, 1)
    vocab = expected_vocab(["a", "b", "b"], 1)
    got = sum((read_split(out, s)["tags"] for s in ("train", "valid", "test")), [])
    assert got == [encode(t, vocab) for t in (["a", "b"], ["b"], [], ["a", "c", "a"])]
    prices = sum((read_split(out, s)["price"] for s in ("train", "valid", "test")), [])
    assert prices == [1.5, 0.0, 2.0, 0.5]

    import pyarrow as pa

    table = pa.table(
        {
            "user": ["u1", "u2", "u1", "u3"],
            "item": [1, 1, 2, 3],
            "tags": [["a", "b"], ["b"], [], ["a", "c", "a"]],
            "price": [1.5, None, 2.0, 0.5],
            "clicked": [1, 0, 0, 1],
        }
    )
    pq.write_table(table, tmp_path / "log.parquet")
    out2 = tmp_path / "pq"
    schema2 = run_prepare(
        "parquet", [tmp_path / "log.parquet"], out2, "--spec", str(spec), "--split", "order",
        "--ratios", "0.5,0.25,0.25",
    )  # fmt: skip
    assert [f.vocab_size for f in schema2.sparse] == [f.vocab_size for f in schema.sparse]
    for split in ("train", "valid", "test"):
        assert read_split(out2, split)["tags"] == read_split(out, split)["tags"]


def test_min_count_and_max_features(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("label: y\nsparse: [a]\n")
    tokens = ["p"] * 5 + ["q"] * 4 + ["r"] * 3 + ["s"] * 1 + ["t"] * 2
    raw = tmp_path / "t.csv"
    raw.write_text(
        "a,y\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(tokens + ["p", "s"] * 2))
    )
    n_train = len(tokens)  # ratios put every hand-picked token in train
    ratios = f"{n_train / (n_train + 4)},{2 / (n_train + 4)},{2 / (n_train + 4)}"
    out = tmp_path / "mc"
    schema = run_prepare(
        "csv",
        [raw],
        out,
        "--spec",
        str(spec),
        "--split",
        "order",
        "--ratios",
        ratios,
        "--min-count",
        "3",
    )
    assert schema.sparse[0].vocab_size == 3 + 2  # p, q, r + padding + OOV
    check_field(out, schema, "a", tokens + ["p", "s"] * 2, n_train, 3)
    card = schema.extra["card"]["fields"]["a"]
    assert card["distinct_train_tokens"] == 5 and card["oov_share_train"] == pytest.approx(3 / 15)
    capped = run_prepare(
        "csv",
        [raw],
        tmp_path / "cap",
        "--spec",
        str(spec),
        "--split",
        "order",
        "--ratios",
        ratios,
        "--max-features",
        "a=4",
    )
    assert capped.sparse[0].vocab_size == 4  # p, q + padding + OOV: the most frequent kept
    ids = read_split(tmp_path / "cap", "train")["a"]
    assert ids == [1] * 5 + [2] * 4 + [3] * 6


def reference_hash(token) -> int:
    """The token hash written out in plain Python: a polynomial over the UTF-8 bytes (or the
    integer's two's complement), then splitmix64's finaliser."""
    m = (1 << 64) - 1
    if isinstance(token, int):
        x = token & m
    else:
        data = token.encode()
        x = sum(b * pow(0x100000001B3, j, 1 << 64) for j, b in enumerate(data)) & m
        x = (x + len(data) * 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def test_max_vocab_hashes_tokens_without_a_vocabulary(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("label: y\nsparse: [a, b]\n")
    rows = [(f"tok{i % 7}", i % 5, i % 2) for i in range(40)] + [("never-in-train", 99, 1)]
    raw = tmp_path / "t.csv"
    raw.write_text("a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    out = tmp_path / "hashed"
    schema = run_prepare(
        "csv", [raw], out, "--spec", str(spec), "--split", "order", "--ratios", "0.8,0.1,0.1",
        "--max-vocab", "a=5",
    )  # fmt: skip
    a = schema.sparse[0]
    assert a.vocab_size == 5 and schema.extra["card"]["fields"]["a"]["hashed"]
    assert not (out / "vocab" / "a.parquet").exists() and (out / "vocab" / "b.parquet").exists()
    got = sum((read_split(out, s)["a"] for s in ("train", "valid", "test")), [])
    assert got == [1 + reference_hash(t) % 4 for t, _, _ in rows]  # the unseen token too
    with pytest.raises(SystemExit, match=r"no sparse field \['c'\]; the fields are a, b"):
        run_prepare("csv", [raw], tmp_path / "bad", "--spec", str(spec), "--max-vocab", "c=5")


def test_integer_tokens_hash_by_value():
    import pyarrow as pa

    from recsys_kdef.data.prepare.hashing import hash_tokens

    values = [0, 1, -5, 2**40, 7]
    assert hash_tokens(pa.array(values)).tolist() == [reference_hash(v) for v in values]
    strings = ["", "a", "héllo", "x" * 40]
    assert hash_tokens(pa.array(strings).slice(1)).tolist() == [
        reference_hash(t) for t in strings[1:]
    ]


def test_get_movielens100k_writes_the_grouplens_layout(tmp_path):
    """tools/get_movielens100k.py's tables -> u.* files that prepare reads back row for row."""
    import importlib.util

    import pyarrow as pa

    spec = importlib.util.spec_from_file_location(
        "get_ml100k", Path(__file__).parents[3] / "tools" / "get_movielens100k.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    ratings = pa.table(
        {
            "user_id": [1, 2, 1, 2],
            "movie_id": [7, 7, 9, 9],
            "rating": [5, 1, 4, 2],
            "timestamp": [1, 2, 3, 4],
        }
    )
    users = pa.table(
        {
            "user_id": [1, 2],
            "age": [15, 40],
            "gender": ["F", "M"],
            "occupation": ["student", "other"],
            "zip_code": ["01", "02"],
        }
    )
    flags = {g: [int(g == "Drama"), int(g in ("Comedy", "War"))] for g in tool.GENRES}
    items = pa.table(
        {
            "movie_id": [7, 9],
            "movie_title": ["A (1990)", "Bé (2001)"],
            "release_date": ["01-Jan-1990", None],
            "video_release_date": [None, None],
            "IMDb_URL": ["u", "v"],
            **flags,
        }
    )
    tool.write_ml100k(ratings, users, items, tmp_path / "ml-100k")
    assert sorted(p.name for p in (tmp_path / "ml-100k").iterdir()) == [
        "u.data",
        "u.item",
        "u.user",
    ]
    schema = run_prepare(
        "movielens100k",
        [tmp_path / "ml-100k"],
        tmp_path / "out",
        "--split",
        "order",
        "--ratios",
        "0.5,0.25,0.25",
    )
    rows = [read_split(tmp_path / "out", s) for s in ("train", "valid", "test")]
    assert sum((r["label"] for r in rows), []) == [1.0, 0.0, 1.0, 0.0]
    release = next(f for f in schema.sparse if f.name == "Release")
    assert release.vocab_size == 3  # PAD, 1990 (the train rows), OOV
    assert [len(g) for r in rows for g in r["Genres"]] == [1, 1, 2, 2]


def test_movielens_history_is_the_users_earlier_liked_movies(tmp_path):
    """--history 3: per kept rating, the last 3 movies its user rated > 3 strictly earlier
    (same-second ratings excluded, file order within a second), in MovieID's ids; brute force."""
    import random

    rng = random.Random(7)
    users, movies = 6, 9
    (tmp_path / "users.dat").write_text(
        "".join(f"{u}::{'FM'[u % 2]}::25::{u}::0000{u}\n" for u in range(1, users + 1))
    )
    (tmp_path / "movies.dat").write_text(
        "".join(f"{m}::Movie {m} (199{m})::Drama\n" for m in range(1, movies + 1))
    )
    pairs = rng.sample([(u, m) for u in range(1, users + 1) for m in range(1, movies + 1)], 40)
    ratings = [(u, m, rng.randint(1, 5), 1000 + rng.randint(0, 12)) for u, m in pairs]  # ties
    (tmp_path / "ratings.dat").write_text(
        "".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ratings)
    )
    out = tmp_path / "ml"
    split = ("--split", "order", "--ratios", "0.5,0.25,0.25")
    schema = run_prepare("movielens", [tmp_path], out, *split, "--history", "3")
    field = next(f for f in schema.sparse if f.name == "MovieHistory")
    target = next(f for f in schema.sparse if f.name == "MovieID")
    assert (field.sequence_of, field.max_len, field.multi_valued) == ("MovieID", 3, True)
    assert field.vocab_size == target.vocab_size
    assert not (out / "vocab" / "MovieHistory.parquet").exists()  # MovieID's mapping serves
    kept = [r for r in ratings if r[2] != 3]
    n_train = sum(1 for r in ratings[:20] if r[2] != 3)  # the order split: lines 1-20 train
    vocab = expected_vocab([m for _, m, _, _ in kept[:n_train]], 1)
    expected = []
    for u, _, _, t in kept:
        earlier = [
            (t2, i, m2)
            for i, (u2, m2, r2, t2) in enumerate(ratings)
            if u2 == u and r2 > 3 and t2 < t
        ]
        expected.append(encode([m2 for _, _, m2 in sorted(earlier)][-3:], vocab))
    got = sum((read_split(out, s)["MovieHistory"] for s in ("train", "valid", "test")), [])
    assert got == expected
    assert any(len(h) == 3 for h in got) and any(len(h) == 0 for h in got)  # truncated, empty
    # without the option the dataset has no sequence; a negative length is refused by name
    plain = run_prepare("movielens", [tmp_path], tmp_path / "plain", *split)
    assert "MovieHistory" not in {f.name for f in plain.sparse}
    with pytest.raises(SystemExit, match="--history must be >= 0"):
        run_prepare("movielens", [tmp_path], tmp_path / "bad", "--history", "-1")
    assert not (tmp_path / "bad").exists()
