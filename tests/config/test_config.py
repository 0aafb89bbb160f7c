from pathlib import Path

import pytest

from recsys_kdef.config import ConfigError, ExperimentConfig, load_config, to_dict
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.ensemble import build_model

ROOT = Path(__file__).resolve().parents[2]


def test_every_config_file_loads():
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert files
    for f in files:
        assert isinstance(load_config(["--config", str(f)]), ExperimentConfig)


def test_overrides_apply_over_the_file_wherever_config_stands():
    cfg = load_config(
        [
            "--model.num_students",
            "7",
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--model.tower.hidden_units=[8, 4]",
            "--train.eval_every_steps",
            "null",
        ]
    )
    assert cfg.model.num_students == 7
    assert cfg.model.tower.hidden_units == [8, 4]
    assert cfg.train.eval_every_steps is None
    assert cfg.data.path == "data/demo"  # from the file
    assert (
        load_config(["--train.embedding_l2", "1e-5"]).train.embedding_l2 == 1e-5
    )  # YAML 1.1 says str


def test_defaults_without_a_file_and_round_trip():
    cfg = load_config([])
    assert to_dict(cfg)["model"]["num_students"] == ExperimentConfig().model.num_students


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model.num_student", "4"], ["model.num_student", "num_students"]),
        (["--modle.x", "1"], ["modle", "model"]),
        (["--model.embedding_mode", "single"], ["model.embedding_mode", "'per_model'", "'shared'"]),
        (["--objective.name", "kdf"], ["objective.name", "kdef", "mean"]),
        (["--model.num_students", "four"], ["model.num_students", "integer"]),
        (["--model.num_students", "0"], ["model.num_students", ">= 1"]),
        (["--train.sparse_optimizer", "adamw"], ["train.sparse_optimizer", "rowwise_adagrad"]),
        (["--planner.sharding_types", "[row_wize]"], ["planner.sharding_types[0]", "table_wise"]),
        (["--model.tower.dropout", "1.5"], ["model.tower.dropout"]),
        (["--data.batch_size"], ["--data.batch_size", "no value"]),
    ],
)
def test_bad_keys_and_values_are_refused_with_the_key_and_what_is_allowed(argv, words):
    with pytest.raises(ConfigError) as err:
        load_config(argv)
    for w in words:
        assert w in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(["--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{bad}:2:1: not valid YAML \(expected ',' or ']'") as e:
        load_config(["--config", str(bad)])
    assert "unicode string" not in str(e.value)
    bad.write_bytes(b"data:\n  path: caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"{bad}:2:12: not UTF-8 text \(byte 0xe9\)"):
        load_config(["--config", str(bad)])


def test_heterogeneous_students_load_and_set_k():
    cfg = load_config(
        [
            "--model.students",
            "[{arch: mlp, count: 2}, {arch: dcnv2, embedding_dim: 8, params: {num_cross_layers: 2}}]",
        ]
    )
    assert cfg.model.num_students == 3
    assert [s.arch for s in cfg.model.students] == ["mlp", "dcnv2"]
    assert cfg.model.students[1].params == {"num_cross_layers": 2}
    assert cfg.model.students[1].embedding_dim == 8


@pytest.mark.parametrize(
    "students, words",
    [
        ("[{arch: mlp, count: 0}]", ["count must be >= 1"]),
        ("[{arch: mlp, cout: 2}]", ["model.students[0].cout", "count"]),
        ("[]", ["model.students must be null or a non-empty list"]),
    ],
)
def test_bad_students_are_named(students, words):
    with pytest.raises(ConfigError) as err:
        load_config(["--model.students", students])
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_an_unknown_architecture_is_named_when_the_model_is_built(tiny_dataset):
    cfg = load_config(["--model.students", "[{arch: mlp}, {arch: dcnv3}]"])  # the zoo knows names
    with pytest.raises(ConfigError) as err:
        build_model(cfg.model, Schema.load(tiny_dataset))
    for w in ["model.students[1]", "architecture 'dcnv3' is not in the zoo", "dcnv2"]:
        assert w in str(err.value), (w, str(err.value))


def test_own_embedding_dims_need_per_model_tables():
    with pytest.raises(ConfigError, match="embedding_dim of its own needs model.embedding_mode"):
        load_config(
            [
                "--model.embedding_mode",
                "shared",
                "--model.students",
                "[{arch: mlp, embedding_dim: 8}]",
            ]
        )


def test_config_names_equal_the_registries_without_importing_them():
    import subprocess
    import sys
    import typing

    from recsys_kdef.config.sections import ObjectiveName
    from recsys_kdef.objectives import OBJECTIVES

    assert set(typing.get_args(ObjectiveName)) == set(OBJECTIVES)
    code = (
        "import sys, recsys_kdef.config; "
        "print(sorted(m for m in sys.modules if m.startswith(('recsys_kdef.models', "
        "'recsys_kdef.objectives'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # config -> objectives -> models -> config is no circle
