import json
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TINY

from recsys_kdef.data.schema import SPLITS, Schema
from recsys_kdef.data.synthetic import generate, make_truth


def read_split(path, split):
    return pq.read_table(sorted((path / split).glob("*.parquet")))


def mann_whitney_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), by ranks."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_layout_schema_and_row_counts(tiny_dataset):
    schema = Schema.load(tiny_dataset)
    assert schema.group == "user_id"
    assert [f.name for f in schema.sparse if f.multi_valued] == ["m1"]
    rows = schema.extra["rows"]
    assert sum(rows.values()) == TINY.rows
    for split in SPLITS:
        files = sorted((tiny_dataset / split).glob("*.parquet"))
        assert len(files) == TINY.files_per_split
        table = read_split(tiny_dataset, split)
        assert table.num_rows == rows[split]
        assert table.schema.equals(schema.arrow_schema())
        lengths = np.array([len(v) for v in table.column("m1").to_pylist()])
        assert lengths.min() >= 1 and lengths.max() <= TINY.max_multi_len


def test_reported_bayes_auc_is_the_auc_of_the_planted_probabilities(tiny_dataset):
    """Recompute the true logits from the stored rows and the seed; their AUC is what schema.json says."""
    schema, signal, _ = make_truth(TINY)
    reported = Schema.load(tiny_dataset).extra["bayes_auc"]
    for split in SPLITS:
        t = read_split(tiny_dataset, split)
        cols = {f.name: t.column(f.name).to_numpy() for f in schema.sparse if not f.multi_valued}
        bags = {}
        for f in schema.sparse:
            if f.multi_valued:
                arr = t.column(f.name).combine_chunks()
                bags[f.name] = (arr.offsets.to_numpy().astype(np.int64), arr.values.to_numpy())
        dense = np.stack([t.column(f.name).to_numpy() for f in schema.dense], axis=1)
        logit = signal.logit(cols, bags, dense)
        auc = mann_whitney_auc(logit, t.column("label").to_numpy())
        assert abs(auc - reported[split]) < 1e-4, split
        assert 0.7 < auc < 0.95  # a real, but not trivial, signal


def test_ids_are_zipf_distributed(tiny_dataset):
    ids = read_split(tiny_dataset, "train").column("c1").to_numpy()
    counts = np.sort(np.bincount(ids, minlength=TINY.vocab_size))[::-1].astype(float)
    # P(rank r) ~ r^-a: the log-log slope of the head of the rank-frequency curve is about -a
    ranks = np.arange(1, 11)
    slope = np.polyfit(np.log(ranks), np.log(counts[:10]), 1)[0]
    assert -TINY.zipf_exponent - 0.35 < slope < -TINY.zipf_exponent + 0.35
    assert counts[0] > 5 * np.median(counts)


def test_same_config_is_kept_and_other_config_is_refused_untouched(tiny_dataset, tmp_path):
    before = (tiny_dataset / "schema.json").read_text()
    generate(TINY, tiny_dataset)  # same config: kept as is
    assert (tiny_dataset / "schema.json").read_text() == before
    with pytest.raises(FileExistsError, match="--force"):
        generate(replace(TINY, seed=8), tiny_dataset)
    assert (tiny_dataset / "schema.json").read_text() == before
    assert json.loads(before)["extra"]["synthetic"]["seed"] == TINY.seed


def test_same_seed_gives_the_same_files(tmp_path):
    cfg = replace(TINY, rows=800)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    for split in SPLITS:
        assert read_split(tmp_path / "a", split).equals(read_split(tmp_path / "b", split))


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    import recsys_kdef.data.synthetic as synthetic

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_write_split", broken)
    with pytest.raises(RuntimeError):
        generate(replace(TINY, rows=800), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
