"""Figure labelling rules, checked on the axes (no pixel comparison): study ticks only at the K
values run and titles naming dataset, epochs and seeds; one seed prints no spread; agreement
ticks one per student; tower layers named for people; embedding spectra as per-student bands;
the calibration plot zoomed to the data."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from recsys_kdef.analysis import diagnose, study
from recsys_kdef.eval.plots import calibration_limits
from recsys_kdef.figures import mean_std_text, subplots, ticks_at


@pytest.fixture
def captured(monkeypatch):
    """Every figure the modules would save: {file name: axes}, not written."""
    figures: dict[str, object] = {}

    def capture(fig, ax, path: Path, legend: bool = True) -> Path:
        figures[Path(path).name] = ax
        return Path(path)

    for module in (study, diagnose):
        monkeypatch.setattr(module, "save_figure", capture)
    yield figures
    plt.close("all")


def study_rows(seeds: int) -> list[dict]:
    rows = []
    for objective in ("mean", "kdef"):
        for k in (1, 2, 4):
            row = {"objective": objective, "students": k, "seeds": seeds}
            for m in ("ensemble_auc", "best_student_auc", "worst_student_auc", "gap",
                      "wall_seconds", "samples_per_sec"):  # fmt: skip
                row[m], row[f"{m}_std"] = 0.7 + k / 100, 0.0 if seeds == 1 else 0.002
            rows.append(row)
    return rows


def test_study_ticks_are_the_k_values_and_titles_name_the_run(captured, tmp_path):
    paths = study.plot(study_rows(3), tmp_path, "criteo_x1, 2 epochs, 3 seeds")
    assert [p.name for p in paths] == list(captured)
    for ax in captured.values():
        assert list(ax.get_xticks()) == [1, 2, 4]  # not 1.5, 2.5
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4"]
        assert ax.get_title().endswith("\ncriteo_x1, 2 epochs, 3 seeds")


def test_one_seed_has_no_spread(captured, tmp_path):
    rows = study_rows(1)
    assert "±" not in study.format_summary(rows) and "(n=1)" in study.format_summary(rows)
    assert "± 0.0020 (n=3)" in study.format_summary(study_rows(3))
    assert mean_std_text(0.5, 0.0, 1) == "0.50000 (n=1)"
    study.plot(rows, tmp_path, "x")
    bars = captured["ensemble_auc_vs_k.png"].containers[0]  # errorbar: (line, caps, bar lines)
    segments = np.concatenate([c.get_segments() for c in bars.lines[2]])
    assert np.allclose(segments[:, 0, 1], segments[:, 1, 1])  # zero-length: no bar drawn


def test_study_context_reads_dataset_epochs_and_seeds(tmp_path):
    root = Path(__file__).resolve().parents[1]
    text = study.study_context(
        str(root / "configs/demo.yaml"), ["--data.path", "data/kdd12", "--train.epochs", "1"], 1
    )
    assert text == "kdd12, 1 epoch, 1 seed"


def diagnose_result(students: int = 3, fields: int = 44) -> dict:
    rng = np.random.default_rng(0)
    tables = [
        {"table": f"s{s}__f{f}", "field": f"f{f}", "student": s, "ia": 3.0,
         "singular_values": sorted(rng.uniform(0.1, 1, 8), reverse=True)}
        for s in range(students) for f in range(fields)
    ]  # fmt: skip
    towers = [
        {"layer": f"groups.0.weights.{i}", "shape": [8, 400], "ia": [2.0] * students,
         "students": list(range(students)),
         "label": diagnose.layer_label(f"towers.groups.0.weights.{i}", [8, 400])}
        for i in range(2)
    ]  # fmt: skip
    corr = np.eye(students).tolist()
    return {"tables": tables, "towers": towers, "students": students, "embedding_dim": 8,
            "agreement": {"logit_correlation": corr, "mean_pairwise": 0.0}}  # fmt: skip


def test_agreement_ticks_sit_on_students_only(captured, tmp_path):
    diagnose.plot(diagnose_result(students=4), tmp_path)
    ax = captured["agreement.png"]
    assert list(ax.get_xticks()) == [0, 1, 2, 3] and list(ax.get_yticks()) == [0, 1, 2, 3]


def test_tower_layers_are_labelled_by_position_and_width(captured, tmp_path):
    assert diagnose.layer_label("towers.groups.0.weights.0", [44, 400]) == "layer 1 (400)"
    assert diagnose.layer_label("towers.groups.1.weights.2", [400, 200], "mlp") == (
        "mlp layer 3 (200)"
    )
    assert diagnose.layer_label("towers.groups.1.stacked.cross__U", [16, 4]) == "cross.U (16x4)"
    diagnose.plot(diagnose_result(), tmp_path)
    labels = [t.get_text() for t in captured["tower_ia.png"].get_xticklabels()]
    assert labels == ["layer 1 (400)", "layer 2 (400)"]


def test_tower_spectra_orders_layers_numerically_and_names_groups():
    import torch

    state = {f"towers.groups.0.weights.{i}": torch.randn(2, 4, 3) for i in (0, 1, 10, 2)}
    state["towers.groups.1.weights.0"] = torch.randn(1, 4, 5)
    rows = diagnose.tower_spectra(state, [0, 2], ["mlp", "dcn"])
    assert [r["layer"] for r in rows][:4] == [f"groups.0.weights.{i}" for i in (0, 1, 2, 10)]
    assert rows[-1]["label"] == "dcn layer 1 (5)" and rows[-1]["students"] == [2]


def test_embedding_spectra_are_one_band_per_student(captured, tmp_path):
    result = diagnose_result(students=3, fields=44)
    bands = diagnose.spectrum_bands(result["tables"])
    assert list(bands) == [0, 1, 2]
    own = np.array([t["singular_values"] for t in result["tables"] if t["student"] == 1])
    own = own / own.max(1, keepdims=True)
    median, low, high = bands[1]
    assert np.allclose(median, np.median(own, 0)) and np.allclose(low, np.percentile(own, 25, 0))
    assert np.all(low <= median) and np.all(median <= high)
    diagnose.plot(result, tmp_path)
    ax = captured["embedding_spectra.png"]
    assert len(ax.get_lines()) == 3  # not 3 x 44
    assert "44 fields" in ax.get_title()


def test_calibration_axes_span_the_data_not_0_to_1():
    curves = {"ensemble": {"reliability": [[0.05, 0.04, 10], [0.12, 0.1, 10], [0.3, 0.35, 5]]}}
    low, high = calibration_limits(curves)
    assert low == pytest.approx(0.04 - 0.05 * 0.31) and high == pytest.approx(0.35 + 0.05 * 0.31)
    assert calibration_limits({"h": {"reliability": []}}) == (0.0, 1.0)
    assert calibration_limits({"h": {"reliability": [[0.0, 0.0, 1], [1.0, 1.0, 1]]}}) == (0, 1)


def test_ticks_at_puts_integer_labels_at_given_values():
    fig, ax = subplots()
    ax.plot([1, 10], [0, 1])
    assert ticks_at(ax.xaxis, [10, 1, 6, 6]) == [1, 6, 10]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "6", "10"]
