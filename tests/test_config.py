from pathlib import Path

import pytest

from recsys_kdef.config import ConfigError, ExperimentConfig, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


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
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(["--config", str(bad)])
