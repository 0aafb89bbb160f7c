"""python -m recsys_kdef.data.prepare FORMAT --raw PATH... --out DIR [options]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys_kdef.data.prepare.formats import FORMATS
from recsys_kdef.data.prepare.pipeline import PrepareOptions, RawFile, prepare
from recsys_kdef.data.schema import SPLITS, DataError


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--raw",
        nargs="+",
        action="extend",
        required=True,
        metavar="PATH",
        help="raw files or directories; with --split files, SPLIT=PATH (train=, valid=, test=)",
    )
    common.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    common.add_argument(
        "--min-count", type=int, help="min training count of a token (default: per format)"
    )
    common.add_argument(
        "--max-features",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=N",
        help="keep a field's most frequent tokens, N ids in all ('*=N' for every field)",
    )
    common.add_argument(
        "--max-vocab",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=N",
        help="hash a field's tokens into a table of N ids, no vocabulary ('*=N' for every field)",
    )
    common.add_argument(
        "--max-len",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=N",
        help="keep a list field's last N ids per row ('*=N' for every list field)",
    )
    common.add_argument(
        "--pooling",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=mean|sum",
        help="how models pool a list field (default mean, FuxiCTR's; '*=sum' for every one)",
    )
    common.add_argument(
        "--split",
        choices=["random", "files", "order"],
        help="default: random, or the format's own (files for releases with split files)",
    )
    common.add_argument("--ratios", default="0.8,0.1,0.1", help="train,valid,test shares")
    common.add_argument("--seed", type=int, default=2024, help="seed of the random split")
    common.add_argument(
        "--skip-bad-rows", action="store_true", help="skip and count malformed rows"
    )
    common.add_argument(
        "--nonfinite-dense",
        choices=["error", "zero"],
        default="error",
        help="a dense inf / nan: stop naming file, line, column and value (default), or "
        "replace it by 0 and count it in the dataset card",
    )
    common.add_argument("--row-group-size", type=int, default=131_072)
    common.add_argument("--rows-per-file", type=int, default=4_194_304)
    common.add_argument(
        "--force", action="store_true", help="overwrite a different dataset at --out"
    )
    common.add_argument("--no-progress", action="store_true")

    parser = argparse.ArgumentParser(
        prog="python -m recsys_kdef.data.prepare",
        description="Convert raw CTR data into a recsys_kdef dataset (schema.json + Parquet splits).",
    )
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    for name, fmt in FORMATS.items():
        p = sub.add_parser(
            name, parents=[common], help=fmt.description, description=fmt.description
        )
        fmt.add_arguments(p)
    return parser


def parse_raw(items: list[str], fmt, split_mode: str = "random") -> list[RawFile]:
    """RawFile per file: SPLIT=PATH tags its files; with --split files a directory of a
    format whose file names say their split (frappe) tags them by name."""
    raw = []
    for item in items:
        split, sep, path = item.partition("=")
        if not sep or split not in SPLITS:
            split, path = None, item
        for p in fmt.resolve(Path(path)):
            by_name = fmt.split_of(p) if split_mode == "files" and split is None else None
            raw.append(RawFile(p, split or by_name))
    return raw


def parse_pooling(items: list[str]) -> dict[str, str]:
    pooling = {}
    for item in items:
        name, sep, how = item.partition("=")
        if not sep:
            raise DataError(f"--pooling {item}: expected FIELD=mean or FIELD=sum")
        pooling[name] = how
    return pooling


def parse_caps(option: str, items: list[str]) -> dict[str, int]:
    caps = {}
    for item in items:
        name, _, n = item.partition("=")
        if not n.isdigit():
            raise DataError(f"{option} {item}: expected FIELD=N with N an integer")
        caps[name] = int(n)
    return caps


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        fmt = FORMATS[args.format](args)
        split = args.split or fmt.default_split
        try:
            ratios = tuple(float(x) for x in args.ratios.split(","))
        except ValueError as e:
            raise DataError(
                f"--ratios {args.ratios}: expected three numbers like 0.8,0.1,0.1"
            ) from e
        opts = PrepareOptions(
            min_count=args.min_count,
            max_features=parse_caps("--max-features", args.max_features),
            max_vocab=parse_caps("--max-vocab", args.max_vocab),
            max_len=parse_caps("--max-len", args.max_len),
            pooling=parse_pooling(args.pooling),
            split=split,
            ratios=ratios,
            seed=args.seed,
            skip_bad_rows=args.skip_bad_rows,
            nonfinite_dense=args.nonfinite_dense,
            row_group_size=args.row_group_size,
            rows_per_file=args.rows_per_file,
            progress=not args.no_progress,
        )
        raw = parse_raw(args.raw, fmt, split)
        result = prepare(fmt, raw, args.out, opts, force=args.force)
    except DataError as e:
        sys.exit(f"error: {e}")
    extra = result.schema.extra
    summary = {
        "out": str(args.out),
        "rows": extra["rows"],
        "ctr": extra["ctr"],
        "vocab_sizes": {f.name: f.vocab_size for f in result.schema.sparse},
        "bad_rows": extra["card"]["bad_rows"]["count"],
        "filtered_rows": extra["card"]["filtered_rows"],
    }
    if result.seconds:
        summary["rows_per_second"] = {
            name: round(result.raw_rows / s) for name, s in result.seconds.items() if s > 0
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
