"""TorchX launch specs: the component's AppDef, and what Slurm and Kubernetes would be sent
(dry runs: no cluster is reachable here; local runs are in test_train_e2e.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from torchx.runner import get_runner

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("launch_components", ROOT / "launch/components.py")
components = importlib.util.module_from_spec(spec)
spec.loader.exec_module(components)


def torchx_dryrun(*args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        ["torchx", "run", "--dryrun", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_component_is_dist_ddp_with_the_script_and_config_fixed():
    app = components.train("--model.num_students", "8", nnodes=2, nproc_per_node=8, gpu=8)
    (role,) = app.roles
    assert role.num_replicas == 2 and role.resource.gpu == 8
    command = role.args[-1]
    assert "torchrun" in command and "--nnodes 2 --nproc_per_node 8" in command
    assert command.endswith(
        "recsys_kdef/train.py --config configs/demo.yaml --model.num_students 8"
    )


def test_evaluate_component_runs_the_evaluation_module():
    app = components.evaluate(
        "--heads", "ensemble", checkpoint="runs/demo", data="data/demo", nproc_per_node=4
    )
    command = " ".join(app.roles[0].args)  # torchrun ... -m recsys_kdef.evaluate ARGS
    assert "--nproc_per_node 4" in command
    assert command.endswith(
        "-m recsys_kdef.evaluate --checkpoint runs/demo --data data/demo --split test --heads ensemble"
    )
    dry = torchx_dryrun(
        "-s", "local_cwd", "launch/components.py:evaluate", "--checkpoint", "runs/demo",
        "--data", "data/demo", "--nproc_per_node", "4",
    )  # fmt: skip
    assert "recsys_kdef.evaluate" in dry


def test_slurm_dry_run_of_the_component():
    out = torchx_dryrun(
        "-s",
        "slurm",
        "launch/components.py:train",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "8",
        "--gpu",
        "8",
        "--config",
        "configs/cetnet.yaml",
        "--",
        "--train.epochs",
        "3",
    )
    assert "#SBATCH hetjob" in out and out.count("--gpus-per-task=8") == 2
    assert "--nnodes 2 --nproc_per_node 8" in out
    assert "recsys_kdef/train.py --config configs/cetnet.yaml --train.epochs 3" in out


def test_slurm_dry_run_of_the_plain_dist_ddp_command():
    out = torchx_dryrun(
        "-s",
        "slurm",
        "dist.ddp",
        "-j",
        "2x8",
        "--gpu",
        "8",
        "--script",
        "recsys_kdef/train.py",
        "--",
        "--config",
        "configs/demo.yaml",
    )
    assert (
        "--nnodes 2 --nproc_per_node 8" in out
        and "recsys_kdef/train.py --config configs/demo.yaml" in out
    )


def test_kubernetes_dry_run_is_a_volcano_job_per_node():
    app = components.train(
        nnodes=2, nproc_per_node=8, gpu=8, image="ghcr.io/example/recsys_kdef:latest"
    )
    request = get_runner().dryrun(app, "kubernetes", cfg={"queue": "default"}).request
    job = json.loads(json.dumps(request.resource, default=lambda o: o.to_dict()))
    assert job["kind"] == "Job" and job["spec"]["queue"] == "default"
    tasks = job["spec"]["tasks"]
    assert len(tasks) == 2
    for task in tasks:
        (container,) = task["template"]["spec"]["containers"]
        assert container["image"] == "ghcr.io/example/recsys_kdef:latest"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert "recsys_kdef/train.py --config configs/demo.yaml" in container["command"][-1]


def test_plan_component_runs_the_tool_in_one_cpu_process():
    app = components.plan("--json", "plan.json", world="4x8", device="h200")
    (role,) = app.roles
    assert role.num_replicas == 1 and role.resource.gpu == 0
    assert [role.entrypoint, *role.args] == [
        "python",
        "-m",
        "recsys_kdef.plan",
        "--config",
        "configs/demo.yaml",
        "--world",
        "4x8",
        "--device",
        "h200",
        "--json",
        "plan.json",
    ]
    # torchx's component linter accepts it (no `X | None` annotations)
    out = torchx_dryrun("-s", "local_cwd", "launch/components.py:plan", "--world", "2x8")
    assert "recsys_kdef.plan" in out and "2x8" in out
