"""Export one student or the ensemble from a checkpoint; score Parquet in a fresh process."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from test_zoo_ensemble import assert_every_student_exports_as_inside

from recsys_kdef.checkpoint.store import load_checkpoint
from recsys_kdef.config import load_config
from recsys_kdef.config.loading import from_dict
from recsys_kdef.config.sections import ModelConfig
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import Schema
from recsys_kdef.distributed.process import destroy_distributed, init_distributed
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.serve.export import export_artifact
from recsys_kdef.serve.predict import Predictor
from recsys_kdef.train import run

ROOT = Path(__file__).resolve().parents[2]


def train_quietly(cfg) -> None:
    """One training run in this process, its INFO logging muted."""
    logging.disable(logging.INFO)
    ctx = init_distributed()
    try:
        run(cfg, ctx)
    finally:
        destroy_distributed()
        logging.disable(logging.NOTSET)


@pytest.fixture(scope="module", params=["per_model", "shared", "stacked"])
def trained(request, tiny_dataset, tmp_path_factory):
    """A trained 3-student CETNet run: per-model tables (separate, or stacked: one table per
    field, student k's columns of it, with an elementwise sparse optimizer) or shared ones."""
    out = tmp_path_factory.mktemp(f"export_{request.param}")
    stacked = ["--model.table_layout", "stacked", "--train.sparse_optimizer", "adam"]
    cfg = load_config(
        [
            *(stacked if request.param == "stacked" else []),
            "--data.path",
            str(tiny_dataset),
            "--data.batch_size",
            "256",
            "--train.epochs",
            "1",
            "--model.num_students",
            "3",
            "--model.embedding_mode",
            "shared" if request.param == "shared" else "per_model",
            "--model.fusion.name",
            "confidence",
            "--objective.name",
            "cetnet",
            "--model.tower.hidden_units",
            "[16]",
            "--train.progress_bar",
            "false",
            "--train.output_dir",
            str(out),
        ]
    )
    train_quietly(cfg)
    return out


def full_model_outputs(checkpoint: Path, parquet: Path):
    """Every head of the trained ensemble (unsharded, from the checkpoint) on `parquet`."""
    ckpt = load_checkpoint(checkpoint)
    schema = Schema.from_json(ckpt["schema"])
    model = build_model(
        from_dict(ModelConfig, ckpt["config"]["model"], "model"), schema, device=torch.device("cpu")
    )
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    heads = []
    with torch.no_grad():
        for batch in ParquetBatchReader([parquet], schema, 500, training=False):
            heads.append(
                {k: torch.sigmoid(v) for k, v in model(batch.dense, batch.sparse).heads().items()}
            )
    return ckpt, {k: torch.cat([h[k] for h in heads]) for k in heads[0]}


def test_exported_best_student_predicts_as_inside_the_ensemble_in_a_fresh_process(
    trained, tiny_dataset, tmp_path
):
    parquet = list_split_files(tiny_dataset, "test")[0]
    ckpt, inside = full_model_outputs(trained, parquet)
    artifact = export_artifact(trained, tmp_path / "best")
    saved = torch.load(artifact, weights_only=False)
    fields = len(Schema.from_json(saved["schema"]).sparse)
    tables = {k.split(".")[-2] for k in saved["state_dict"] if ".embedding_bags." in k}
    assert len(tables) == fields  # that student's tables only (or the shared ones)
    assert not any("fusion" in k or "objective" in k for k in saved["state_dict"])
    out = tmp_path / "preds.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys_kdef.serve.predict",
            "--model",
            str(tmp_path / "best"),
            "--input",
            str(parquet),
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pq.read_table(out)
    preds = torch.from_numpy(table.column("prediction").to_numpy()).double()
    best = ckpt["best_student"]
    torch.testing.assert_close(preds, inside[f"student_{best}"].double(), rtol=0, atol=1e-6)
    assert table.column("label").to_pylist() == pq.read_table(parquet).column("label").to_pylist()


def test_exported_ensemble_and_chosen_student(trained, tiny_dataset, tmp_path):
    parquet = list_split_files(tiny_dataset, "test")[0]
    _, inside = full_model_outputs(trained, parquet)
    ensemble = Predictor.load(export_artifact(trained, tmp_path / "all", "ensemble"))
    assert ensemble.head == "fused"
    student2 = Predictor.load(export_artifact(trained, tmp_path / "s2", "2"))
    batch = next(iter(ParquetBatchReader([parquet], ensemble.schema, 10**6, training=False)))
    torch.testing.assert_close(ensemble.predict(batch), inside["fused"], rtol=0, atol=1e-6)
    torch.testing.assert_close(student2.predict(batch), inside["student_2"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="student 7 does not exist"):
        export_artifact(trained, tmp_path / "s7", "7")
    with pytest.raises(ValueError, match="best, ensemble or a student index, got 'bestt'"):
        export_artifact(trained, tmp_path / "x", "bestt")
    assert not (tmp_path / "s7").exists() and not (tmp_path / "x").exists()  # nothing half-written


def test_scoring_a_file_without_labels(trained, tiny_dataset, tmp_path):
    parquet = list_split_files(tiny_dataset, "test")[0]
    unlabeled = tmp_path / "unlabeled.parquet"
    pq.write_table(pq.read_table(parquet).drop(["label"]), unlabeled)
    predictor = Predictor.load(export_artifact(trained, tmp_path / "best"))
    rows = predictor.predict_parquet(unlabeled, tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert rows == pq.read_metadata(parquet).num_rows and table.column_names[0] == "prediction"
    assert "label" not in table.column_names


def test_sequence_students_export_and_score_as_inside_the_ensemble(seq_dataset, tmp_path):
    """CETNet's DIN + DIEN (DIEN with its auxiliary loss): each student, exported alone, reads
    its history from its own tables and scores as it does inside the ensemble."""
    out = tmp_path / "run"
    students = (
        "[{arch: din, params: {dnn_hidden_units: [8], attention_hidden_units: [4]}},"
        " {arch: dien, params: {dnn_hidden_units: [8], aux_loss_alpha: 0.2,"
        " aux_hidden_units: [4], attention_hidden_units: [4]}}]"
    )
    cfg = load_config(
        ["--config", str(ROOT / "configs" / "cetnet_din_dien.yaml")]
        + ["--data.path", str(seq_dataset), "--data.batch_size", "256"]
        + ["--model.embedding_dim", "4", "--model.students", students]
        + ["--train.epochs", "1", "--train.progress_bar", "false"]
        + ["--train.output_dir", str(out)]
    )
    train_quietly(cfg)
    assert_every_student_exports_as_inside(out, seq_dataset, tmp_path)
