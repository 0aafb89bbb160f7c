"""The scaling study and the collapse diagnostics on a small synthetic dataset with a planted
signal: every figure and JSON entry, resuming skips finished runs, the paper's finding (KDEF's
worst student is closer to its ensemble than mean fusion's), and the diagnostics against
direct NumPy computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys_kdef.analysis.diagnose import diagnose, information_abundance
from recsys_kdef.analysis.diagnose import main as diagnose_main
from recsys_kdef.analysis.study import main as study_main
from recsys_kdef.checkpoint.store import load_checkpoint
from recsys_kdef.config import SyntheticConfig
from recsys_kdef.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = [
    "--data.batch_size", "1024",
    "--model.tower.hidden_units", "[64,32]",
    "--train.epochs", "2",
]  # fmt: skip


def test_information_abundance_of_known_matrices():
    rng = np.random.default_rng(0)
    sigma = lambda m: np.linalg.svd(m, compute_uv=False)  # noqa: E731
    assert information_abundance(sigma(np.eye(7))) == pytest.approx(7)
    rank_one = np.outer(rng.normal(size=50), rng.normal(size=16))
    assert information_abundance(sigma(rank_one)) == pytest.approx(1, abs=1e-6)
    m = rng.normal(size=(200, 16))
    s = sigma(m)
    assert information_abundance(s) == pytest.approx(s.sum() / s.max())
    assert 1 < information_abundance(s) < 16


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    data = root / "data"
    generate(SyntheticConfig(rows=60000, row_group_size=4096, seed=11), data)
    out = root / "out"
    argv = ["--config", str(ROOT / "configs/demo.yaml"), "--students", "1,4"]
    argv += ["--objectives", "mean,kdef", "--seeds", "1", "--out", str(out)]
    argv += ["--data.path", str(data), *OVERRIDES]
    study_main(argv)
    return argv, out, data


def test_study_writes_every_figure_and_entry_and_resumes(study, capsys):
    argv, out, _ = study
    report = json.loads((out / "study.json").read_text())
    assert {(r["objective"], r["students"]) for r in report["runs"]} == {
        ("mean", 1), ("mean", 4), ("kdef", 1), ("kdef", 4),
    }  # fmt: skip
    for row in report["aggregate"]:
        for key in ("ensemble_auc", "best_student_auc", "worst_student_auc", "gap",
                    "samples_per_sec", "wall_seconds"):  # fmt: skip
            assert np.isfinite(row[key]) and f"{key}_std" in row
    for name in report["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report["figures"]) == 4
    # each run's summary is its own metrics.json read back
    for r in report["runs"]:
        metrics = json.loads(
            (
                out / "runs" / f"{r['objective']}-K{r['students']}-seed2024" / "metrics.json"
            ).read_text()
        )
        aucs = [metrics["test"][f"student_{k}"]["auc"] for k in range(r["students"])]
        assert (
            r["worst_student_auc"] == min(aucs)
            and r["ensemble_auc"] == metrics["test"]["ensemble"]["auc"]
        )
    # a rerun trains nothing: every run.json stays as it was
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/run.json")}
    capsys.readouterr()
    study_main(argv)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/run.json")} == stamps
    assert "kdef" in capsys.readouterr().out


def test_kdef_worst_student_is_closer_to_the_ensemble_than_mean_fusions(study):
    _, out, _ = study
    rows = {
        (r["objective"], r["students"]): r
        for r in json.loads((out / "study.json").read_text())["aggregate"]
    }
    assert rows[("kdef", 4)]["gap"] < rows[("mean", 4)]["gap"], rows
    assert rows[("kdef", 1)]["gap"] == 0  # one student is its own ensemble


def test_diagnose_matches_direct_computations_and_sees_kdef_students_agree(study, tmp_path):
    _, out, data = study
    results = {}
    for objective in ("kdef", "mean"):
        run = out / "runs" / f"{objective}-K4-seed2024"
        results[objective] = diagnose(run, None, "valid", 50_000)
    kdef = results["kdef"]
    # IA of a table = sum/max of the singular values of the rows the training split uses
    state = load_checkpoint(out / "runs/kdef-K4-seed2024")["state_dict"]
    table = next(t for t in kdef["tables"] if t["table"] == "s2__c3")
    ids = np.unique(pq.read_table(data / "train", columns=["c3"]).column("c3").to_numpy())
    weight = state["sparse_arch.embedding_bag_collection.embedding_bags.s2__c3.weight"]
    s = np.linalg.svd(weight.numpy()[ids].astype(np.float64), compute_uv=False)
    assert table["rows_used"] == len(ids) and table["student"] == 2 and table["field"] == "c3"
    assert table["ia"] == pytest.approx(s.sum() / s.max(), rel=1e-9)
    assert len(kdef["tables"]) == 4 * 11  # K x F tables
    w0 = state["towers.groups.0.weights.0"][1].numpy().astype(np.float64)
    s0 = np.linalg.svd(w0, compute_uv=False)
    layer = next(t for t in kdef["towers"] if t["layer"] == "groups.0.weights.0")
    assert layer["ia"][1] == pytest.approx(s0.sum() / s0.max(), rel=1e-9)
    corr = np.array(kdef["agreement"]["logit_correlation"])
    assert corr.shape == (4, 4) and np.allclose(np.diag(corr), 1) and np.allclose(corr, corr.T)
    # KDEF's students learn from each other: their logits agree more than mean fusion's
    assert kdef["agreement"]["mean_pairwise"] > results["mean"]["agreement"]["mean_pairwise"]
    # the command line writes the JSON and the figures
    diagnose_main(["--checkpoint", str(out / "runs/kdef-K4-seed2024"), "--out", str(tmp_path)])
    written = json.loads((tmp_path / "diagnose.json").read_text())
    assert written["figures"] == [
        "embedding_ia.png",
        "embedding_spectra.png",
        "tower_ia.png",
        "agreement.png",
    ]
    assert all((tmp_path / f).stat().st_size > 1000 for f in written["figures"])


MIX = (
    "[{arch: mlp, params: {hidden_units: [32]}},"
    " {arch: dcn, params: {num_cross_layers: 2, dnn_hidden_units: [16]}}]"
)


def test_a_heterogeneous_study_scales_every_group_and_refuses_a_k_the_mix_does_not_divide(
    study, tmp_path, capsys
):
    _, _, data = study
    argv = ["--config", str(ROOT / "configs/demo.yaml"), "--objectives", "kdef", "--seeds", "1"]
    argv += ["--data.path", str(data), *OVERRIDES, "--train.epochs", "1", "--model.students", MIX]
    with pytest.raises(SystemExit) as refused:
        study_main([*argv, "--students", "2,3", "--out", str(tmp_path / "bad")])
    assert "K = 3 is not a multiple of the 2 students" in str(refused.value)
    assert not (tmp_path / "bad").exists()  # refused before any run started
    out = tmp_path / "mix"
    study_main([*argv, "--students", "2,4", "--out", str(out)])
    report = json.loads((out / "study.json").read_text())
    assert [r["students"] for r in report["runs"]] == [2, 4]
    for k in (2, 4):
        metrics = json.loads((out / "runs" / f"kdef-K{k}-seed2024" / "metrics.json").read_text())
        groups = metrics["config"]["model"]["students"]
        assert [(g["arch"], g["count"]) for g in groups] == [("mlp", k // 2), ("dcn", k // 2)]
        assert {f"student_{i}" for i in range(k)} <= set(metrics["test"])
        assert f"student_{k}" not in metrics["test"]
        assert metrics["test"]["ensemble"]["auc"] > 0.6  # the planted signal is learned
    # diagnose names each group's layers by the ensemble's students (mlp: 0-1, dcn: 2-3)
    diagnose_main(["--checkpoint", str(out / "runs/kdef-K4-seed2024"), "--out", str(tmp_path)])
    towers = json.loads((tmp_path / "diagnose.json").read_text())["towers"]
    by_group = {t["layer"].split(".")[1]: t["students"] for t in towers}
    assert by_group == {"0": [0, 1], "1": [2, 3]}, towers
    assert (tmp_path / "tower_ia.png").stat().st_size > 1000
