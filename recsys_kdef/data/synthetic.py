"""Synthetic CTR data with a planted, learnable signal and a known best-possible AUC.

The true click logit is a sum of per-id weights (single- and multi-valued fields, the user
id), a non-linear term in the dense fields, and pairwise field interactions that a linear
model cannot fit: every id of an interacting field belongs to one of C hidden clusters, and
a pair of fields adds M[cluster_a, cluster_b] from a random C x C table. Labels are Bernoulli draws from sigmoid(logit), so the AUC of
the true probabilities on each split is the Bayes-optimal AUC; it is stored in
schema.json under extra.bayes_auc.

With `sequence_len` > 0 a behaviour sequence `hist_c1` (of field c1, the target item) plants a
target-attention signal: c1's ids fall in hidden categories, each row's history mostly comes
from two interest categories, and the logit grows with how many of the history's last
`sequence_len` items are in the target item's category (`sample_behaviour`).

    python -m recsys_kdef.data.synthetic --config configs/demo.yaml [--force]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchmetrics.functional.classification import binary_auroc

from recsys_kdef.config import SyntheticConfig, load_config
from recsys_kdef.data.schema import DenseField, Schema, SparseField
from recsys_kdef.io import hidden_sibling

# Shares of the logit variance; the total standard deviation is LOGIT_STD.
LOGIT_STD = 1.5
SHARES = {"single": 0.45, "multi": 0.15, "dense": 0.15, "pairs": 0.25}
CHUNK_ROWS = 1 << 18
SEQUENCE_CATEGORIES = 32
"""Hidden categories of the target item's ids (id % categories) in the behaviour signal."""
SEQUENCE_SCALE = 0.8
"""Logit per history item in the target's category (Bayes AUC ~0.8 alone)."""


@dataclass
class Behaviour:
    """n rows of a target item and its history: target (n,), lengths (n,), history (sum of
    lengths,) oldest first, match (n,) how many of the last max_len are in the target's category
    (a count, not a share: DIN's unnormalised attention keeps this intensity, a mean loses it)."""

    target: np.ndarray
    lengths: np.ndarray
    history: np.ndarray
    match: np.ndarray


def sample_behaviour(n: int, vocab: int, max_len: int, rng: np.random.Generator) -> Behaviour:
    """Rows with two interest categories each: 80% of the 1..ceil(1.5 max_len) history items and
    half the targets come from them, the rest uniformly; item = category + C * uniform."""
    c = min(SEQUENCE_CATEGORIES, vocab)
    per_cat = vocab // c
    interests = rng.integers(0, c, (n, 2))
    lengths = rng.integers(1, -(-3 * max_len // 2) + 1, n)
    row = np.repeat(np.arange(n), lengths)
    pick = interests[row, rng.integers(0, 2, row.size)]
    cat = np.where(rng.random(row.size) < 0.8, pick, rng.integers(0, c, row.size))
    target_cat = np.where(
        rng.random(n) < 0.5, interests[np.arange(n), rng.integers(0, 2, n)], rng.integers(0, c, n)
    )
    ends = np.cumsum(lengths)
    from_end = np.repeat(ends, lengths) - 1 - np.arange(row.size)  # 0 for the newest item
    seen = from_end < max_len  # what the model reads
    hits = np.bincount(row, weights=seen & (cat == target_cat[row]), minlength=n)
    return Behaviour(
        target=target_cat + c * rng.integers(0, per_cat, n),
        lengths=lengths,
        history=cat + c * rng.integers(0, per_cat, row.size),
        match=hits,
    )


@dataclass
class PlantedSignal:
    """The ground truth: per-id weights, id factors for pairwise terms, dense coefficients."""

    bias: float
    weights: dict[str, np.ndarray]  # field -> (vocab,)
    clusters: dict[str, np.ndarray]  # field -> (vocab,) hidden cluster of each id
    pairs: list[tuple[str, str]]
    pair_tables: list[np.ndarray]  # per pair, (C, C) interaction values
    dense_coef: np.ndarray  # (num_dense,)

    def logit(
        self,
        cols: dict[str, np.ndarray],
        bags: dict[str, tuple[np.ndarray, np.ndarray]],
        dense: np.ndarray,
    ) -> np.ndarray:
        """(N,) true logits for single-valued ids `cols`, bags (offsets, values) and dense (N, Dd)."""
        z = np.full(dense.shape[0], self.bias)
        for name, ids in cols.items():
            z += self.weights[name][ids]
        for name, (offsets, values) in bags.items():
            lengths = np.diff(offsets)
            sums = np.add.reduceat(self.weights[name][values], offsets[:-1])
            z += sums / lengths  # bag mean
        if dense.shape[1]:
            z += np.tanh(1.5 * dense) @ self.dense_coef
        for (a, b), table in zip(self.pairs, self.pair_tables):
            z += table[self.clusters[a][cols[a]], self.clusters[b][cols[b]]]
        return z


def build_schema(cfg: SyntheticConfig) -> Schema:
    """Fields: user_id (the group key), c1..cN single-valued, m1..mM multi-valued, d1..dD dense."""
    sparse = [SparseField("user_id", cfg.num_users)]
    sparse += [SparseField(f"c{i + 1}", cfg.vocab_size) for i in range(cfg.num_sparse)]
    sparse += [
        SparseField(f"m{i + 1}", cfg.vocab_size, multi_valued=True, pooling="mean")
        for i in range(cfg.num_multi)
    ]
    if cfg.sequence_len:
        sparse.append(
            SparseField(
                "hist_c1",
                cfg.vocab_size,
                multi_valued=True,
                pooling="mean",
                sequence_of="c1",
                max_len=cfg.sequence_len,
            )
        )
    dense = [DenseField(f"d{i + 1}") for i in range(cfg.num_dense)]
    return Schema(sparse=tuple(sparse), dense=tuple(dense), label="label", group="user_id")


def plant_signal(cfg: SyntheticConfig, schema: Schema, rng: np.random.Generator) -> PlantedSignal:
    """Draw the ground truth, scaled so each component carries its share of the logit variance."""
    single = [f.name for f in schema.sparse if not f.multi_valued]
    multi = [f.name for f in schema.sparse if f.multi_valued and f.sequence_of is None]
    var = LOGIT_STD**2
    weights = {}
    for f in schema.sparse:
        if f.sequence_of is not None:  # the behaviour signal is its own term (sample_behaviour)
            continue
        share = (
            SHARES["single"] / len(single)
            if not f.multi_valued
            else SHARES["multi"] / max(len(multi), 1)
        )
        # a bag mean of L ids has variance w^2 / L: scale up by the mean length
        boost = (1 + cfg.max_multi_len) / 2 if f.multi_valued else 1.0
        weights[f.name] = rng.normal(0, np.sqrt(var * share * boost), f.vocab_size)
    dense_coef = rng.normal(0, 1, cfg.num_dense)
    if cfg.num_dense:
        dense_coef *= np.sqrt(var * SHARES["dense"] / (0.6 * np.sum(dense_coef**2)))
    pairs: list[tuple[str, str]] = []
    clusters, tables = {}, []
    c = cfg.interaction_clusters
    if c > 1 and len(single) >= 3:
        items = single[1:]  # user_id stays a main effect only
        pairs = [(items[i], items[(i + 1) % len(items)]) for i in range(min(len(items), 4))]
        for name in sorted({n for p in pairs for n in p}):
            clusters[name] = rng.integers(
                0, c, schema.sparse[schema.sparse_names.index(name)].vocab_size
            )
        tables = [rng.normal(0, np.sqrt(var * SHARES["pairs"] / len(pairs)), (c, c)) for _ in pairs]
    return PlantedSignal(
        bias=0.0,
        weights=weights,
        clusters=clusters,
        pairs=pairs,
        pair_tables=tables,
        dense_coef=dense_coef,
    )


def zipf_ids(
    n: int, vocab: int, exponent: float, perm: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """n ids with P(rank r) ~ r^-exponent; `perm` maps ranks to ids so hot ids are scattered."""
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -exponent
    ranks = rng.choice(vocab, size=n, p=p / p.sum())
    return perm[ranks]


def sample_rows(
    cfg: SyntheticConfig,
    schema: Schema,
    signal: PlantedSignal,
    perms: dict[str, np.ndarray],
    n: int,
    rng: np.random.Generator,
) -> tuple[pa.Table, np.ndarray]:
    """n rows as an Arrow table (the schema's layout) and their true click probabilities."""
    cols: dict[str, np.ndarray] = {}
    bags: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for f in schema.sparse:
        if f.sequence_of is not None:
            continue
        if f.multi_valued:
            lengths = rng.integers(1, cfg.max_multi_len + 1, n)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            bags[f.name] = (
                offsets,
                zipf_ids(int(offsets[-1]), f.vocab_size, cfg.zipf_exponent, perms[f.name], rng),
            )
        else:
            cols[f.name] = zipf_ids(n, f.vocab_size, cfg.zipf_exponent, perms[f.name], rng)
    behaviour = None
    if cfg.sequence_len:
        behaviour = sample_behaviour(n, cfg.vocab_size, cfg.sequence_len, rng)
        cols["c1"] = behaviour.target
    dense = rng.normal(0, 1, (n, cfg.num_dense)).astype(np.float32)
    logit = signal.logit(cols, bags, dense)
    if behaviour is not None:
        logit += SEQUENCE_SCALE * behaviour.match
    prob = 1 / (1 + np.exp(-logit))
    label = (rng.random(n) < prob).astype(np.float32)
    arrays, names = [], []
    for f in schema.sparse:
        if f.sequence_of is not None:
            offsets = np.concatenate([[0], np.cumsum(behaviour.lengths)])
            arrays.append(
                pa.ListArray.from_arrays(
                    pa.array(offsets.astype(np.int32)), pa.array(behaviour.history)
                )
            )
        elif f.multi_valued:
            offsets, values = bags[f.name]
            arrays.append(
                pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))
            )
        else:
            arrays.append(pa.array(cols[f.name]))
        names.append(f.name)
    for j, f in enumerate(schema.dense):
        arrays.append(pa.array(dense[:, j]))
        names.append(f.name)
    arrays.append(pa.array(label))
    names.append(schema.label)
    table = pa.Table.from_arrays(arrays, schema=schema.arrow_schema())
    return table, prob


def calibrate_bias(
    cfg: SyntheticConfig, schema: Schema, signal: PlantedSignal, perms, rng
) -> float:
    """Intercept that makes the mean click probability close to cfg.base_ctr (bisection on a sample)."""
    _, prob0 = sample_rows(cfg, schema, signal, perms, 20_000, rng)
    z = np.log(prob0 / (1 - prob0))
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(z + mid)))) < cfg.base_ctr:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def make_truth(cfg: SyntheticConfig) -> tuple[Schema, PlantedSignal, dict[str, np.ndarray]]:
    """The schema, the planted signal and the rank -> id maps that `cfg` (its seed) determines."""
    schema = build_schema(cfg)
    rng = np.random.default_rng(cfg.seed)
    signal = plant_signal(cfg, schema, rng)
    perms = {f.name: rng.permutation(f.vocab_size) for f in schema.sparse}
    signal.bias = calibrate_bias(cfg, schema, signal, perms, np.random.default_rng(cfg.seed + 1))
    return schema, signal, perms


def split_sizes(cfg: SyntheticConfig) -> dict[str, int]:
    valid = int(cfg.rows * cfg.valid_fraction)
    test = int(cfg.rows * cfg.test_fraction)
    return {"train": cfg.rows - valid - test, "valid": valid, "test": test}


def generate(cfg: SyntheticConfig, out_dir: str | Path, force: bool = False) -> Schema:
    """Write schema.json and train/valid/test Parquet files under out_dir; returns the schema.

    Written to a temporary sibling directory and renamed at the end, so a failure leaves
    nothing behind. An existing out_dir made from the same config is kept as is.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        try:
            existing = Schema.load(out_dir)
        except ValueError:
            existing = None
        if existing is not None and existing.extra.get("synthetic") == asdict(cfg) and not force:
            print(f"{out_dir}: already generated from this config; keeping it (--force to redo)")
            return existing
        if not force:
            raise FileExistsError(
                f"{out_dir} exists and was not generated from this config; "
                "remove it or pass --force to overwrite it"
            )
    schema, signal, perms = make_truth(cfg)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = hidden_sibling(out_dir)
    tmp.mkdir()  # mode per the umask (mkdtemp's 0700 would hide the dataset from the team)
    try:
        bayes, ctr = {}, {}
        for s, (split, n) in enumerate(split_sizes(cfg).items()):
            split_rng = np.random.default_rng([cfg.seed, s + 2])
            probs, labels = _write_split(cfg, schema, signal, perms, n, tmp / split, split_rng)
            bayes[split] = float(
                binary_auroc(torch.from_numpy(probs), torch.from_numpy(labels).long())
            )
            ctr[split] = float(labels.mean())
        schema = Schema(
            sparse=schema.sparse,
            dense=schema.dense,
            label=schema.label,
            group=schema.group,
            extra={
                "bayes_auc": bayes,
                "ctr": ctr,
                "rows": split_sizes(cfg),
                "synthetic": asdict(cfg),
            },
        )
        schema.save(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return schema


def _write_split(
    cfg, schema, signal, perms, n, split_dir: Path, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Write n rows as cfg.files_per_split Parquet files; returns (true probs, labels) of the split."""
    split_dir.mkdir(parents=True)
    probs, labels = [], []
    per_file = np.array_split(np.arange(n), cfg.files_per_split)
    for i, rows in enumerate(per_file):
        with pq.ParquetWriter(split_dir / f"part-{i:05d}.parquet", schema.arrow_schema()) as writer:
            for start in range(0, len(rows), CHUNK_ROWS):
                m = min(CHUNK_ROWS, len(rows) - start)
                table, prob = sample_rows(cfg, schema, signal, perms, m, rng)
                writer.write_table(table, row_group_size=cfg.row_group_size)
                probs.append(prob)
                labels.append(table.column(schema.label).to_numpy())
    return np.concatenate(probs), np.concatenate(labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic dataset a config describes.")
    parser.add_argument(
        "--config", required=True, help="experiment YAML with data.path and data.synthetic"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing dataset")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(["--config", args.config, *overrides])
    if cfg.data.synthetic is None:
        sys.exit(f"{args.config}: data.synthetic is not set, so there is nothing to generate")
    schema = generate(cfg.data.synthetic, cfg.data.path, force=args.force)
    print(
        json.dumps(
            {"path": cfg.data.path, **{k: schema.extra[k] for k in ("rows", "ctr", "bayes_auc")}}
        )
    )


if __name__ == "__main__":
    main()
