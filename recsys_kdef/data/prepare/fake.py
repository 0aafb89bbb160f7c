"""Raw files in the exact layout of each format, with a planted signal, for tests and benchmarks.

    python -m recsys_kdef.data.prepare.fake kdd12 --rows 10000000 --out raw/kdd12

Ids are Zipf-distributed over realistic vocabularies (KDD12: millions of users, queries and
titles). Labels are Bernoulli draws from a logistic model of a few fields, each id's weight
a hash of the id, so no table the size of a vocabulary is held.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from recsys_kdef.data.prepare.formats.avazu import CATEGORICAL as AVAZU_CATEGORICAL
from recsys_kdef.data.prepare.formats.kdd12 import COLUMNS as KDD12_COLUMNS
from recsys_kdef.data.prepare.formats.libfm import FRAPPE
from recsys_kdef.data.prepare.hashing import uniform

CHUNK = 1 << 20
# KDD Cup 2012 track 2: distinct values per column, about as in the released training.txt
KDD12_VOCAB = {
    "DisplayURL": 27_000,
    "AdID": 641_000,
    "AdvertiserID": 14_800,
    "Depth": 3,
    "Position": 3,
    "QueryID": 24_000_000,
    "KeywordID": 1_250_000,
    "TitleID": 4_050_000,
    "DescriptionID": 3_170_000,
    "UserID": 22_000_000,
}
GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western"]  # fmt: skip


def zipf(rng: np.random.Generator, n: int, vocab: int, a: float = 1.1) -> np.ndarray:
    """n ranks in [1, vocab] with P(r) ~ r^-a (inverse CDF of the continuous power law)."""
    u = rng.random(n)
    r = np.floor(((vocab ** (1 - a) - 1) * u + 1) ** (1 / (1 - a)))
    return np.clip(r, 1, vocab).astype(np.int64)


def weight(ids: np.ndarray, salt: int, scale: float) -> np.ndarray:
    """A fixed pseudo-random weight per id in [-scale, scale]."""
    return (uniform(7, salt, ids) * 2 - 1) * scale


def click(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    return (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype(np.int64)


def _write(path: Path, table: pa.Table, delimiter: str, header: bool, append: bool) -> None:
    buf = io.BytesIO()
    if header:  # pyarrow quotes header names even with quoting_style="none"
        buf.write((delimiter.join(table.column_names) + "\n").encode())
    pcsv.write_csv(
        table,
        buf,
        pcsv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none"),
    )
    with open(path, "ab" if append else "wb") as f:
        f.write(buf.getvalue())


def _chunks(rows: int) -> list[int]:
    return [min(CHUNK, rows - s) for s in range(0, rows, CHUNK)]


def fake_criteo(out: Path, rows: int, seed: int) -> list[Path]:
    """train.txt: label, I1..I13 (some empty), C1..C26 (8 hex digits, some empty)."""
    rng = np.random.default_rng(seed)
    path = out / "train.txt"
    for i, n in enumerate(_chunks(rows)):
        cols, logit = {}, np.full(n, -1.3)
        ints = {}
        for j in range(13):
            v = np.floor(rng.exponential(20.0 if j % 3 else 2.0, n)).astype(np.int64) - (j == 1)
            ints[f"I{j + 1}"] = pa.array(v, mask=rng.random(n) < 0.1)
            logit += 0.15 * np.log1p(np.maximum(v, 0)) * (1 if j % 2 else -1)
        cats = {}
        for j in range(26):
            ids = zipf(rng, n, 1000 if j % 4 else 100_000)
            logit += weight(ids, j, 1.2 if j < 6 else 0.3)
            hexes = np.char.mod("%08x", (ids * 2654435761) % (1 << 32))
            cats[f"C{j + 1}"] = pa.array(hexes, mask=rng.random(n) < 0.05)
        cols = {"label": pa.array(click(rng, logit)), **ints, **cats}
        _write(path, pa.table(cols), "\t", header=False, append=i > 0)
    return [path]


def fake_avazu(out: Path, rows: int, seed: int) -> list[Path]:
    """train.csv with Avazu's header; hours over ten days of October 2014."""
    rng = np.random.default_rng(seed)
    path = out / "train.csv"
    for i, n in enumerate(_chunks(rows)):
        day = 21 + np.sort(rng.integers(0, 10, n))
        hour = rng.integers(0, 24, n)
        logit = -1.6 + 0.6 * np.sin(hour / 24 * 2 * np.pi)
        cols = {
            "id": pa.array(rng.integers(0, 1 << 62, n).astype(np.uint64).astype(str)),
            "click": None,
            "hour": pa.array(np.char.mod("1410%04d", day * 100 + hour)),
        }
        for j, name in enumerate(AVAZU_CATEGORICAL):
            ids = zipf(rng, n, 20 if j in (1, 11, 12) else 5000)
            logit += weight(ids, j, 1.0 if j < 8 else 0.2)
            cols[name] = pa.array(np.char.mod("%x", ids * 40503))
        cols["click"] = pa.array(click(rng, logit))
        _write(path, pa.table(cols), ",", header=i == 0, append=i > 0)
    return [path]


def fake_kdd12(out: Path, rows: int, seed: int) -> list[Path]:
    """training.txt (12 integer columns) and userid_profile.txt (UserID, Gender, Age)."""
    rng = np.random.default_rng(seed)
    path = out / "training.txt"
    for i, n in enumerate(_chunks(rows)):
        cols = {}
        logit = np.full(n, -3.0)
        for j, (name, vocab) in enumerate(KDD12_VOCAB.items()):
            ids = zipf(rng, n, vocab, 1.05) if vocab > 3 else rng.integers(1, vocab + 1, n)
            if name == "Position":
                ids = np.minimum(ids, cols["Depth"].to_numpy())
            logit += weight(ids, j, 1.5 if name in ("AdID", "Position", "UserID") else 0.4)
            cols[name] = pa.array(ids)
        views = 1 + rng.geometric(0.7, n) - 1
        clicks = rng.binomial(views, 1 / (1 + np.exp(-logit)))
        table = pa.table({"Click": pa.array(clicks), "Impression": pa.array(views), **cols})
        _write(path, table.select(list(KDD12_COLUMNS)), "\t", header=False, append=i > 0)
    users = min(KDD12_VOCAB["UserID"], max(rows, 1000))
    profile = pa.table(
        {
            "UserID": pa.array(np.arange(1, users + 1)),
            "Gender": pa.array(rng.integers(0, 3, users)),
            "Age": pa.array(rng.integers(0, 7, users)),
        }
    )
    _write(out / "userid_profile.txt", profile, "\t", header=False, append=False)
    return [path, out / "userid_profile.txt"]


def fake_movielens(out: Path, rows: int, seed: int) -> list[Path]:
    """ratings.dat, users.dat, movies.dat ('::', Latin-1) with ratings from a planted taste model."""
    rng = np.random.default_rng(seed)
    n_users, n_movies = 6040, 3952
    gender = rng.choice(["M", "F"], n_users)
    age = rng.choice([1, 18, 25, 35, 45, 50, 56], n_users)
    occupation = rng.integers(0, 21, n_users)
    lines = [
        f"{u + 1}::{gender[u]}::{age[u]}::{occupation[u]}::{rng.integers(10000, 99999)}"
        for u in range(n_users)
    ]
    (out / "users.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    years = rng.integers(1919, 2001, n_movies)
    genre_sets = [
        rng.choice(len(GENRES), rng.integers(1, 4), replace=False) for _ in range(n_movies)
    ]
    lines = [
        f"{m + 1}::Film {m + 1}, Ça (The) ({years[m]})::{'|'.join(GENRES[g] for g in genre_sets[m])}"
        for m in range(n_movies)
    ]
    (out / "movies.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    user_bias = rng.normal(0, 0.8, n_users)
    movie_bias = rng.normal(0, 0.8, n_movies)
    taste = rng.normal(0, 0.8, (7, len(GENRES)))  # age group x genre
    age_group = np.searchsorted([1, 18, 25, 35, 45, 50, 56], age)
    path = out / "ratings.dat"
    for i, n in enumerate(_chunks(rows)):
        u = zipf(rng, n, n_users, 0.6) - 1
        m = zipf(rng, n, n_movies, 0.8) - 1
        affinity = np.array([taste[age_group[a], genre_sets[b]].mean() for a, b in zip(u, m)])
        score = 3.4 + user_bias[u] + movie_bias[m] + affinity + 0.15 * (years[m] < 1970)
        rating = np.clip(np.rint(score + rng.normal(0, 0.7, n)), 1, 5).astype(np.int64)
        table = pa.table(
            {
                "u": pa.array(u + 1),
                "m": pa.array(m + 1),
                "r": pa.array(rating),
                "t": pa.array(rng.integers(956703932, 1046454590, n)),
            }
        )
        buf = io.BytesIO()
        pcsv.write_csv(table, buf, pcsv.WriteOptions(include_header=False, delimiter="\t"))
        with open(path, "ab" if i else "wb") as f:
            f.write(buf.getvalue().replace(b"\t", b"::"))
    return [path, out / "users.dat", out / "movies.dat"]


def fake_frappe(out: Path, rows: int, seed: int) -> list[Path]:
    """frappe.{train,validation,test}.libfm: label (-1/1) and 10 idx:1 tokens, ids global."""
    rng = np.random.default_rng(seed)
    sizes = [957, 4082, 7, 7, 2, 3, 2, 9, 80, 233]  # ids per field, as in Frappe
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    paths = []
    for name, share in (("train", 0.7), ("validation", 0.2), ("test", 0.1)):
        n = max(int(rows * share), 10)
        logit = np.full(n, -0.7)
        cols = {"label": None}
        for j, size in enumerate(sizes):
            ids = zipf(rng, n, size, 0.9) - 1
            logit += weight(ids, j, 2.0 if j < 2 else 0.5)
            cols[FRAPPE[j]] = pa.array(np.char.mod("%d:1", offsets[j] + ids))
        cols["label"] = pa.array(click(rng, logit) * 2 - 1)
        paths.append(out / f"frappe.{name}.libfm")
        _write(paths[-1], pa.table(cols), " ", header=False, append=False)
    return paths


def joined(flat: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Per row, its `lengths[i]` ids of `flat` (in order) joined by '^', as the releases write."""
    ends = np.cumsum(lengths)
    tokens = flat.astype(str)
    return pa.array(["^".join(tokens[e - n : e]) for e, n in zip(ends, lengths)], pa.string())


def histories(rng, n: int, mean_len: float, lengths: tuple[int, int], pick) -> tuple:
    """(flat ids, lengths) of n behaviour sequences, oldest first: lengths geometric around
    `mean_len` within [lo, hi], ids drawn by `pick(row of each id)`."""
    lo, hi = lengths
    size = np.clip(rng.geometric(1 / mean_len, n) - 1, lo, hi)
    return pick(np.repeat(np.arange(n), size)), size


def release_files(out: Path, rows: int, table: Callable[[int, int], pa.Table]) -> list[Path]:
    """train.csv and test.csv (an eighth of the rows) of a FuxiCTR release, with a header;
    `table(n, salt)` makes n rows."""
    paths = [out / "train.csv", out / "test.csv"]
    for part, (path, n) in enumerate(zip(paths, (rows - rows // 8, max(rows // 8, 1)))):
        for i, m in enumerate(_chunks(n)):
            _write(path, table(m, 1000 * part + i), ",", header=i == 0, append=i > 0)
    return paths


def ids_of(groups: np.ndarray, universe: int) -> Callable:
    """`pick(rng, group)`: a random id of [1, universe] whose group (groups[id]) is `group`."""
    members = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]

    def pick(rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
        sizes = np.array([len(members[g]) for g in group])
        at = (rng.random(len(group)) * np.maximum(sizes, 1)).astype(np.int64)
        return np.array([members[g][a] if len(members[g]) else 1 for g, a in zip(group, at)])

    return pick


def fake_amazonelectronics(out: Path, rows: int, seed: int) -> list[Path]:
    """AmazonElectronics_x1: label, user_id, item_id, cate_id, item_history, cate_history.
    Each user likes one category: 70 % of the history is of it, and a clicked target too."""
    items, cates, users = 5000, 60, max(rows // 8, 50)
    cate_of = (uniform(3, seed, np.arange(items + 1)) * cates).astype(np.int64) + 1
    cate_of[0] = 0
    liked = ids_of(cate_of, items)

    def table(n: int, salt: int) -> pa.Table:
        rng = np.random.default_rng([seed, salt])
        user = rng.integers(1, users + 1, n)
        taste = (uniform(5, seed, user) * cates).astype(np.int64) + 1

        def pick(row: np.ndarray) -> np.ndarray:
            own = rng.random(len(row)) < 0.7
            return np.where(own, liked(rng, taste[row]), zipf(rng, len(row), items))

        flat, lengths = histories(rng, n, 30, (1, 160), pick)  # some past the 100 kept
        label = rng.integers(0, 2, n)
        target = np.where(label == 1, liked(rng, taste), zipf(rng, n, items))
        return pa.table(
            {
                "label": pa.array(label),
                "user_id": pa.array(user),
                "item_id": pa.array(target),
                "cate_id": pa.array(cate_of[target]),
                "item_history": joined(flat, lengths),
                "cate_history": joined(cate_of[flat], lengths),
            }
        )

    return release_files(out, rows, table)


def fake_taobaoad(out: Path, rows: int, seed: int) -> list[Path]:
    """TaobaoAd_x1: clk, btag_his, cate_his, brand_his (up to 50, some empty), the user's
    profile, the ad's cate_id / campaign_id / customer / brand, price, pid, btag (always 1,
    as in the release). A click is likelier when the ad's category is in the user's history."""
    users, ads, cates, brands = max(rows // 10, 50), 3000, 200, 800
    profile = {
        "cms_segid": 97, "cms_group_id": 13, "final_gender_code": 2, "age_level": 7,
        "pvalue_level": 4, "shopping_level": 3, "occupation": 2, "new_user_class_level": 5,
    }  # fmt: skip
    ad_cate = (uniform(11, seed, np.arange(ads + 1)) * cates).astype(np.int64) + 1

    def table(n: int, salt: int) -> pa.Table:
        rng = np.random.default_rng([seed, salt])
        user = rng.integers(1, users + 1, n)
        taste = (uniform(13, seed, user) * cates).astype(np.int64) + 1
        ad = zipf(rng, n, ads)
        cate, his_len = histories(rng, n, 20, (0, 50), lambda row: np.where(
            rng.random(len(row)) < 0.6, taste[row], rng.integers(1, cates + 1, len(row))
        ))  # fmt: skip
        owner = np.repeat(np.arange(n), his_len)
        seen = np.bincount(owner[cate == ad_cate[ad][owner]], minlength=n) > 0
        logit = -3.2 + 2.0 * seen + weight(ad, 1, 0.6)
        cols = {
            "clk": pa.array(click(rng, logit)),
            "btag_his": joined(rng.choice([1, 1, 1, 2, 3, 4], len(cate)), his_len),
            "cate_his": joined(cate, his_len),
            "brand_his": joined((cate * 7 + rng.integers(0, 3, len(cate))) % brands + 1, his_len),
            "userid": pa.array(user),
        }
        for j, (name, size) in enumerate(profile.items()):
            cols[name] = pa.array((uniform(17 + j, seed, user) * size).astype(np.int64))
        cols |= {
            "adgroup_id": pa.array(ad),
            "cate_id": pa.array(ad_cate[ad]),
            "campaign_id": pa.array(ad // 3 + 1),
            "customer": pa.array(ad // 5 + 1),
            "brand": pa.array((ad_cate[ad] * 7) % brands + 1),
            "price": pa.array(np.round(np.exp(uniform(19, seed, ad) * 8), 2)),
            "pid": pa.array(rng.choice(["430548_1007", "430539_1007"], n)),
            "btag": pa.array(np.ones(n, np.int64)),
        }
        return pa.table(cols)

    return release_files(out, rows, table)


def fake_kuaivideo(out: Path, rows: int, seed: int) -> list[Path]:
    """KuaiVideo_x1: timestamp, user_id, item_id, is_click, is_like, is_follow, pos_items,
    neg_items (up to 100 each). Items fall in 20 topics; a user clicks their topic's items more,
    and their pos_items lean to it."""
    users, items, topics = max(rows // 20, 50), 20000, 20
    topic_of = (uniform(23, seed, np.arange(items + 1)) * topics).astype(np.int64)
    of_topic = ids_of(topic_of, items)

    def table(n: int, salt: int) -> pa.Table:
        rng = np.random.default_rng([seed, salt])
        user = rng.integers(0, users, n)
        taste = (uniform(29, seed, user) * topics).astype(np.int64)
        item = zipf(rng, n, items, 0.9)
        logit = -1.0 + 2.0 * (topic_of[item] == taste) + weight(item, 2, 0.5)
        is_click = click(rng, logit)
        pos, pos_len = histories(rng, n, 40, (0, 100), lambda row: np.where(
            rng.random(len(row)) < 0.6, of_topic(rng, taste[row]), zipf(rng, len(row), items)
        ))  # fmt: skip
        neg, neg_len = histories(rng, n, 40, (0, 100), lambda row: zipf(rng, len(row), items))
        return pa.table(
            {
                "timestamp": pa.array(np.sort(rng.integers(0, 10**9, n)) + salt * 10**9),
                "user_id": pa.array(user),
                "item_id": pa.array(item),
                "is_click": pa.array(is_click),
                "is_like": pa.array(is_click * (rng.random(n) < 0.1)),
                "is_follow": pa.array(is_click * (rng.random(n) < 0.02)),
                "pos_items": joined(pos, pos_len),
                "neg_items": joined(neg, neg_len),
            }
        )

    return release_files(out, rows, table)


FAKES: dict[str, Callable[[Path, int, int], list[Path]]] = {
    "criteo": fake_criteo,
    "avazu": fake_avazu,
    "kdd12": fake_kdd12,
    "movielens": fake_movielens,
    "frappe": fake_frappe,
    "amazonelectronics": fake_amazonelectronics,
    "taobaoad": fake_taobaoad,
    "kuaivideo": fake_kuaivideo,
}


def make_fake(fmt: str, out: str | Path, rows: int, seed: int = 0) -> list[Path]:
    """Write `rows` raw rows of format `fmt` under `out`; returns the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return FAKES[fmt](out, rows, seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write fake raw files in a format's exact layout.")
    parser.add_argument("format", choices=sorted(FAKES))
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in make_fake(args.format, args.out, args.rows, args.seed):
        print(path)


if __name__ == "__main__":
    main()
