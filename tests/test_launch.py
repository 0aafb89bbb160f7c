"""TorchX launch specs: the component's AppDef, and what Slurm and Kubernetes would be sent
(dry runs: no cluster is reachable here; local runs are in test_train_e2e.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torchx.runner import get_runner

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("launch_components", ROOT / "launch/components.py")
components = importlib.util.module_from_spec(spec)
spec.loader.exec_module(components)


def torchx_dryrun(*args: str) -> str:
    """`torchx run --dryrun ARGS` from the repository root (its .torchxconfig applies), with
    no Docker daemon reachable."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
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
    command = " ".join(app.roles[0].args)  # torchrun ... -m recsys_kdef.eval ARGS
    assert "--nproc_per_node 4" in command
    assert command.endswith(
        "-m recsys_kdef.eval --checkpoint runs/demo --data data/demo --split test --heads ensemble"
    )
    dry = torchx_dryrun(
        "-s", "local_cwd", "launch/components.py:evaluate", "--checkpoint", "runs/demo",
        "--data", "data/demo", "--nproc_per_node", "4",
    )  # fmt: skip
    assert "recsys_kdef.eval" in dry


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


def test_hosts_are_sized_from_the_processes_per_host():
    (role,) = components.train(nnodes=2, nproc_per_node=8).roles
    per_proc = (components.CPU_PER_PROC, components.MEM_GB_PER_PROC)
    assert (role.resource.gpu, role.resource.cpu, role.resource.memMB) == (
        8,
        8 * per_proc[0],
        8 * per_proc[1] * 1024,
    )
    (cpu_role,) = components.evaluate(checkpoint="r", data="d", nproc_per_node=2, gpu=0).roles
    assert cpu_role.resource.gpu == 0 and cpu_role.resource.cpu == 2 * per_proc[0]


def test_slurm_2x8_asks_8_gpus_and_scaled_cpus_and_memory_per_node():
    out = torchx_dryrun(
        "-s", "slurm", "launch/components.py:train", "--nnodes", "2", "--nproc_per_node", "8",
        "--cpu_per_proc", "4", "--mem_gb_per_proc", "16",
        "--data", "/shared/data/criteo", "--output", "/shared/runs/c1",
    )  # fmt: skip
    (line0, line1) = [ln for ln in out.splitlines() if ln.startswith("#SBATCH --job-name")]
    for line in (line0, line1):  # one hetjob group per node
        assert "--gpus-per-task=8" in line and "--cpus-per-task=32" in line, line
        assert "--mem=131072" in line and "--time=1-00:00:00" in line, line  # .torchxconfig
    assert "--data.path /shared/data/criteo --train.output_dir /shared/runs/c1" in out


def k8s_job(app) -> dict:
    request = get_runner().dryrun(app, "kubernetes", cfg={"queue": "default"}).request
    return json.loads(json.dumps(request.resource, default=lambda o: o.to_dict()))


def test_kubernetes_job_mounts_the_data_read_only_and_the_run_directory():
    app = components.train(
        nnodes=2, nproc_per_node=8, image="img", data="/data/criteo", data_volume="criteo",
        output="/runs/c1", output_volume="/mnt/fast/runs", mounts=["type=volume", "src=x", "dst=/x"],
    )  # fmt: skip
    for task in k8s_job(app)["spec"]["tasks"]:
        pod = task["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        mounted = {
            m["mount_path"]: (volumes[m["name"]], m["read_only"])
            for m in container["volume_mounts"]
        }
        data, read_only = mounted["/data/criteo"]
        assert data["persistent_volume_claim"]["claim_name"] == "criteo" and read_only
        runs, read_only = mounted["/runs/c1"]
        assert runs["host_path"]["path"] == "/mnt/fast/runs" and not read_only
        assert mounted["/x"][0]["persistent_volume_claim"]["claim_name"] == "x"
        assert "--data.path /data/criteo --train.output_dir /runs/c1" in container["command"][-1]


def test_evaluate_mounts_the_checkpoint_and_the_data():
    app = components.evaluate(
        checkpoint="/runs/c1", checkpoint_volume="runs", data="/data/c", data_volume="criteo"
    )
    (mount_ckpt, mount_data) = app.roles[0].mounts
    assert (mount_ckpt.src, mount_ckpt.dst_path, mount_ckpt.read_only) == (
        "runs",
        "/runs/c1",
        False,
    )
    assert (mount_data.src, mount_data.dst_path, mount_data.read_only) == (
        "criteo",
        "/data/c",
        True,
    )


def test_a_volume_without_its_path_is_refused():
    with pytest.raises(ValueError, match="--data_volume needs --data"):
        components.train(data_volume="criteo")


def test_kubernetes_cli_dry_run_needs_no_docker():
    """The .torchxconfig sets no workspace (so nothing is built) and the Volcano queue."""
    out = torchx_dryrun(
        "-s", "kubernetes", "launch/components.py:train", "--nnodes", "2", "--nproc_per_node",
        "8", "--image", "ghcr.io/example/recsys_kdef:1", "--output", "/runs/c1",
        "--output_volume", "runs",
    )  # fmt: skip
    assert "queue: default" in out and "claimName: runs" in out and "mountPath: /runs/c1" in out
    assert "nvidia.com/gpu: '8'" in out


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
