"""Every console script of pyproject.toml answers --help (exit 0, a usage line); train's help
lists every config key with its type and default; the script and module paths run too."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def entry_point(target: str):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def test_every_command_line_is_a_console_script():
    assert len(SCRIPTS) >= 9
    assert SCRIPTS["recsys-kdef-train"] == "recsys_kdef.train:main"
    assert SCRIPTS["recsys-kdef-evaluate"] == "recsys_kdef.eval.__main__:main"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_exits_zero_with_a_usage_line(script, capsys):
    try:
        entry_point(SCRIPTS[script])(["--help"])
        code = 0  # train prints its help and returns
    except SystemExit as e:  # argparse exits after printing
        code = e.code
    out = capsys.readouterr().out
    assert code in (0, None), (script, code)
    assert out.lower().startswith("usage:"), out[:200]


def test_train_help_lists_every_config_key_with_type_and_default(capsys):
    entry_point(SCRIPTS["recsys-kdef-train"])(["--help"])
    out = capsys.readouterr().out
    for line in (
        "--train.epochs  int = 10",
        "--data.batch_size  int = 4096",
        "--objective.name  {kdef|mean|cetnet|eckd} = kdef",
        "--planner.plan_file  str | null = null",
        "--objective.kdef.consistency  {mse|huber|kl|bce} = mse",
        "model.students[].arch  str = mlp",
    ):
        assert line in out, line
    assert "Training batch size per process." in out  # the field's docstring
    sections = {"data", "model", "objective", "train", "planner"}
    assert all(f"\n{s} (" in out for s in sections), sections


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "recsys_kdef/train.py", "--help"],
        [sys.executable, "-m", "recsys_kdef.eval", "--help"],
    ],
    ids=["train.py", "-m recsys_kdef.eval"],
)
def test_the_script_and_module_paths_answer_help(command):
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:200]
