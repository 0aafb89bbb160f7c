"""The raw formats `python -m recsys_kdef.data.prepare FORMAT` reads, by name. A new format is
one file (a Format subclass: name, text layout, fields() and features(chunk)) and one entry
here; the prepare command gets its subcommand from this table. recsys_kdef.data.prepare.fake
writes test files in a format's exact layout (FAKES)."""

from __future__ import annotations

from recsys_kdef.data.prepare.formats.avazu import Avazu
from recsys_kdef.data.prepare.formats.base import Features, FieldSpec, Format
from recsys_kdef.data.prepare.formats.criteo import Criteo
from recsys_kdef.data.prepare.formats.fuxictr import AmazonElectronics, KuaiVideo, TaobaoAd
from recsys_kdef.data.prepare.formats.kdd12 import KDD12
from recsys_kdef.data.prepare.formats.libfm import Frappe, LibFM
from recsys_kdef.data.prepare.formats.movielens import MovieLens, MovieLens100K
from recsys_kdef.data.prepare.formats.tabular import Tabular, TabularParquet

FORMATS: dict[str, type[Format]] = {
    f.name: f
    for f in (
        Criteo,
        Avazu,
        KDD12,
        MovieLens,
        MovieLens100K,
        Frappe,
        LibFM,
        Tabular,
        TabularParquet,
        AmazonElectronics,
        TaobaoAd,
        KuaiVideo,
    )
}

__all__ = ["FORMATS", "FieldSpec", "Features", "Format"]
