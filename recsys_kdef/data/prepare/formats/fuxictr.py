"""FuxiCTR's (BARS') sequence releases: AmazonElectronics_x1, TaobaoAd_x1, KuaiVideo_x1.

Each is a directory of CSV files with a header, `train.csv` and `test.csv` (a `valid.csv`
beside them is used if present; without one, valid rows are drawn from train.csv by the
seeded hash, `--ratios`' train : valid proportion, 8 : 1 by default). Behaviour sequences are
`^`-joined ids, oldest first, a sequence of a target field: it shares the target's ids and
table, keeps its last `max_len` ids and is mean-pooled by students that do not read
sequences. The columns, the sequence lengths and the min counts are those of the releases'
dataset configs in BARS (read there); the gAUC group is the raw user id, which FuxiCTR keeps
as a `meta` column, not a feature.

    python -m recsys_kdef.data.prepare amazonelectronics --raw DIR --out data/amazonelectronics
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys_kdef.data.prepare.formats.tabular import ListSpec, TableSpec, Tabular
from recsys_kdef.data.schema import DataError

FILES = {"train.csv": "train", "valid.csv": "valid", "test.csv": "test"}

TAOBAO_SPARSE = [
    "userid",
    "cms_segid",
    "cms_group_id",
    "final_gender_code",
    "age_level",
    "pvalue_level",
    "shopping_level",
    "occupation",
    "new_user_class_level",
    "adgroup_id",
    "cate_id",
    "campaign_id",
    "customer",
    "brand",
    "pid",
    "btag",
]
# the columns of each release's CSV header, in file order (for the fake files and the docs)
AMAZON_COLUMNS = ("label", "user_id", "item_id", "cate_id", "item_history", "cate_history")
TAOBAO_COLUMNS = (
    "clk",
    "btag_his",
    "cate_his",
    "brand_his",
    *TAOBAO_SPARSE[:-3],
    "brand",
    "price",
    "pid",
    "btag",
)
KUAI_COLUMNS = (
    "timestamp",
    "user_id",
    "item_id",
    "is_click",
    "is_like",
    "is_follow",
    "pos_items",
    "neg_items",
)


def sequence(of: str, max_len: int) -> ListSpec:
    return ListSpec(separator="^", of=of, max_len=max_len)


class Release(Tabular):
    """A FuxiCTR release: a fixed spec, its own file names, its split by file."""

    spec_of_release: TableSpec
    default_split = "files"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """No --spec: the release fixes its columns."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.spec = self.spec_of_release

    def resolve(self, raw: Path) -> list[Path]:
        """A directory means its train.csv, valid.csv (if there) and test.csv; nothing else."""
        if not raw.is_dir():
            return [raw]
        missing = [n for n in ("train.csv", "test.csv") if not (raw / n).is_file()]
        if missing:
            raise DataError(
                f"{raw}: no {' or '.join(missing)}; the {self.name} release is a directory "
                "with train.csv and test.csv (and optionally valid.csv)"
            )
        return [raw / n for n in FILES if (raw / n).is_file()]

    def split_of(self, path: Path) -> str | None:
        return FILES.get(path.name)


class AmazonElectronics(Release):
    name = "amazonelectronics"
    description = (
        "FuxiCTR's AmazonElectronics_x1: train.csv, test.csv (label, user_id, item_id, cate_id, "
        "item_history, cate_history; ^-joined)"
    )
    default_min_count = 1
    spec_of_release = TableSpec(
        label="label",
        sparse=["item_id", "cate_id"],
        sequences={
            "item_history": sequence("item_id", 100),
            "cate_history": sequence("cate_id", 100),
        },
        group="user_id",
    )
    group = group_source = "user_id"


class TaobaoAd(Release):
    name = "taobaoad"
    description = (
        "FuxiCTR's TaobaoAd_x1: train.csv, test.csv (clk, 16 categorical, price, "
        "cate_his / brand_his / btag_his; ^-joined)"
    )
    default_min_count = 10
    spec_of_release = TableSpec(
        label="clk",
        sparse=TAOBAO_SPARSE,
        sequences={
            "cate_his": sequence("cate_id", 50),
            "brand_his": sequence("brand", 50),
            "btag_his": sequence("btag", 50),
        },
        dense=["price"],
    )
    group, group_source = "group_id", "userid"


class KuaiVideo(Release):
    name = "kuaivideo"
    description = (
        "FuxiCTR's KuaiVideo_x1: train.csv, test.csv (is_click, user_id, item_id, "
        "pos_items / neg_items; ^-joined)"
    )
    default_min_count = 10
    spec_of_release = TableSpec(
        label="is_click",
        sparse=["user_id", "item_id"],
        sequences={
            "pos_items": sequence("item_id", 100),
            "neg_items": sequence("item_id", 100),
        },
    )
    group, group_source = "group_id", "user_id"


RELEASES = (AmazonElectronics, TaobaoAd, KuaiVideo)
