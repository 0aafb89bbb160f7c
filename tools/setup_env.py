"""Create the virtual environment: torch + fbgemm-gpu + torchrec (without its CUDA
dependency) from the pins in pyproject.toml, then this project and its test tools.

    python3 tools/setup_env.py                      # CPU (torch 2.13.0 CPU, fbgemm-gpu-cpu)
    python3 tools/setup_env.py --cuda cu128 \
        --torch-index https://download.pytorch.org/whl/cu128   # CUDA machine

Why a script: a project file cannot say "torchrec, but not its fbgemm-gpu dependency",
and a plain `pip install torchrec` pulls the 465 MB CUDA fbgemm-gpu whose files
overwrite the CPU build.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_stack() -> dict[str, str]:
    """The torch / fbgemm_gpu / torchrec pins from pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["recsys_kdef"]["stack"]


def pip(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "--quiet", *args]
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=str(ROOT / ".venv"), help="where to create it")
    parser.add_argument(
        "--cuda",
        default=None,
        help="install the CUDA fbgemm-gpu instead of fbgemm-gpu-cpu (e.g. cu128)",
    )
    parser.add_argument(
        "--torch-index",
        default=None,
        help="package index for torch and fbgemm-gpu, e.g. https://download.pytorch.org/whl/cpu",
    )
    args = parser.parse_args()

    stack = read_stack()
    env_dir = Path(args.venv)
    python = env_dir / "bin" / "python"
    if not python.exists():
        print(f"creating {env_dir}", flush=True)
        venv.EnvBuilder(with_pip=True).create(env_dir)

    index = ["--extra-index-url", args.torch_index] if args.torch_index else []
    fbgemm = "fbgemm-gpu" if args.cuda else "fbgemm-gpu-cpu"
    pip(python, *index, f"torch=={stack['torch']}", f"{fbgemm}=={stack['fbgemm_gpu']}")
    pip(python, "--no-deps", f"torchrec=={stack['torchrec']}")
    pip(python, "-e", f"{ROOT}[test]")
    subprocess.run(
        [
            str(python),
            "-c",
            "import torchrec, fbgemm_gpu, torchx; print('stack ok:', torchrec.__version__)",
        ],
        check=True,
    )


if __name__ == "__main__":
    sys.exit(main())
