"""TorchX components for recsys_kdef: training and offline evaluation (thin wrappers over
`dist.ddp`) and the plan tool.

    torchx run -s local_cwd launch/components.py:train --nproc_per_node 2 --gpu 0 -- --model.num_students 4
    torchx run -s slurm launch/components.py:train --nnodes 2 --nproc_per_node 8 --config configs/criteo.yaml \
        --data /shared/data/criteo --output /shared/runs/criteo
    torchx run -s kubernetes launch/components.py:train --nnodes 2 --nproc_per_node 8 --image IMAGE \
        --data /data/criteo --data_volume criteo --output /runs/criteo --output_volume runs-criteo
    torchx run -s local_cwd launch/components.py:evaluate --checkpoint runs/demo --data data/demo --gpu 0
    torchx run -s local_cwd launch/components.py:plan --world 2x8 --device h100 -- --json plan.json

The training job is `torchx run dist.ddp -j 2x8 --script recsys_kdef/train.py -- --config ...`;
`train` fixes the script, puts the config first, and sizes each host from its processes:
one GPU, `cpu_per_proc` CPUs and `mem_gb_per_proc` GB per process. Scheduler defaults (the
Volcano queue, no Docker workspace) are in the repository's .torchxconfig.
"""

# torchx 0.7's component linter reads annotations as written: it needs typing.Optional / Dict,
# not `X | None` (and no `from __future__ import annotations`).
from typing import Dict, List, NamedTuple, Optional  # noqa: UP035

import torchx
from torchx import specs
from torchx.components import dist

# Per process (one per GPU on GPU hosts): data reading and the planner's host-side work; an
# 8-GPU host asks 64 CPUs and 512 GB, within an H100 / H200 node (about 200 cores, 2 TB).
CPU_PER_PROC = 8
MEM_GB_PER_PROC = 64


def train(
    *script_args: str,
    config: str = "configs/demo.yaml",
    nnodes: int = 1,
    nproc_per_node: int = 2,
    image: str = torchx.IMAGE,
    gpu: int = -1,
    cpu_per_proc: int = CPU_PER_PROC,
    mem_gb_per_proc: int = MEM_GB_PER_PROC,
    h: Optional[str] = None,  # noqa: UP045
    data: Optional[str] = None,  # noqa: UP045
    output: Optional[str] = None,  # noqa: UP045
    data_volume: Optional[str] = None,  # noqa: UP045
    output_volume: Optional[str] = None,  # noqa: UP045
    mounts: Optional[List[str]] = None,  # noqa: UP006, UP045
    max_retries: int = 0,
    env: Optional[Dict[str, str]] = None,  # noqa: UP006, UP045
) -> specs.AppDef:
    """Train recsys_kdef on nnodes x nproc_per_node processes.

    Args:
        script_args: config overrides passed to recsys_kdef/train.py (e.g. --model.num_students 8)
        config: experiment YAML, relative to the working directory of the job
        nnodes: number of hosts
        nproc_per_node: processes per host (one per GPU on GPU hosts)
        image: container image (docker / kubernetes) or working directory (local, slurm)
        gpu: GPUs per host; -1: one per process (nproc_per_node); 0 on CPU hosts
        cpu_per_proc: CPUs per process (a host asks nproc_per_node times this)
        mem_gb_per_proc: memory per process in GB (a host asks nproc_per_node times this)
        h: a registered named resource (overrides gpu, cpu_per_proc, mem_gb_per_proc)
        data: dataset directory as the job sees it (sets --data.path)
        output: run directory as the job sees it (sets --train.output_dir: checkpoints, metrics)
        data_volume: Kubernetes: a PersistentVolumeClaim name, or a host path (/...), mounted read-only at data
        output_volume: Kubernetes: a PersistentVolumeClaim name, or a host path (/...), mounted at output
        mounts: more mounts, torchx syntax (type=volume,src=CLAIM,dst=/path[,readonly]); Slurm has none (shared filesystem)
        max_retries: scheduler retries (with -- --train.resume auto a retry resumes)
        env: extra environment variables
    """
    paths = _paths(
        ("data", "--data.path", data, data_volume, True),
        ("output", "--train.output_dir", output, output_volume, False),
    )
    return dist.ddp(
        "--config",
        config,
        *paths.args,
        *script_args,
        script="recsys_kdef/train.py",
        name="recsys_kdef",
        max_retries=max_retries,
        **_hosts(nnodes, nproc_per_node, image, gpu, cpu_per_proc, mem_gb_per_proc, h, env),
        mounts=[*paths.mounts, *(mounts or [])],
    )


def evaluate(
    *script_args: str,
    checkpoint: str,
    data: str,
    split: str = "test",
    nnodes: int = 1,
    nproc_per_node: int = 2,
    image: str = torchx.IMAGE,
    gpu: int = -1,
    cpu_per_proc: int = CPU_PER_PROC,
    mem_gb_per_proc: int = MEM_GB_PER_PROC,
    h: Optional[str] = None,  # noqa: UP045
    data_volume: Optional[str] = None,  # noqa: UP045
    checkpoint_volume: Optional[str] = None,  # noqa: UP045
    mounts: Optional[List[str]] = None,  # noqa: UP006, UP045
    env: Optional[Dict[str, str]] = None,  # noqa: UP006, UP045
) -> specs.AppDef:
    """Evaluate a checkpoint on a Parquet split with nnodes x nproc_per_node processes (any
    number: the checkpoint is resharded on load).

    Args:
        script_args: more options of python -m recsys_kdef.eval (--heads, --predictions, --out, --tmp-dir)
        checkpoint: a run directory (its best checkpoint) or one checkpoint directory
        data: dataset directory (schema.json and one directory per split)
        split: the split to evaluate
        nnodes: number of hosts
        nproc_per_node: processes per host
        image: container image (docker / kubernetes) or working directory (local, slurm)
        gpu: GPUs per host; -1: one per process (nproc_per_node); 0 on CPU hosts
        cpu_per_proc: CPUs per process (a host asks nproc_per_node times this)
        mem_gb_per_proc: memory per process in GB (a host asks nproc_per_node times this)
        h: a registered named resource (overrides gpu, cpu_per_proc, mem_gb_per_proc)
        data_volume: Kubernetes: a PersistentVolumeClaim name, or a host path (/...), mounted read-only at data
        checkpoint_volume: Kubernetes: a PersistentVolumeClaim name, or a host path (/...), mounted at checkpoint
        mounts: more mounts, torchx syntax (type=volume,src=CLAIM,dst=/path[,readonly])
        env: extra environment variables
    """
    paths = _paths(
        ("checkpoint", "--checkpoint", checkpoint, checkpoint_volume, False),
        ("data", "--data", data, data_volume, True),
    )
    return dist.ddp(
        *paths.args,
        "--split",
        split,
        *script_args,
        m="recsys_kdef.eval",
        name="recsys_kdef_evaluate",
        **_hosts(nnodes, nproc_per_node, image, gpu, cpu_per_proc, mem_gb_per_proc, h, env),
        mounts=[*paths.mounts, *(mounts or [])],
    )


class _Paths(NamedTuple):
    args: list  # e.g. ["--data.path", "/data/criteo"]
    mounts: list  # torchx mount tokens, e.g. ["type=volume", "src=criteo", "dst=/data/criteo", "readonly"]


def _paths(*entries: tuple) -> _Paths:
    """The flags naming the job's directories and the mounts of the volumes holding them.

    Each entry is (parameter, flag, path in the job or None, volume or None, read-only); a
    volume starting with / is a host path (bind mount), anything else a claim name.
    """
    args, mounts = [], []
    for param, flag, path, volume, readonly in entries:
        if path is not None:
            args += [flag, path]
        if volume is None:
            continue
        if path is None:
            raise ValueError(f"--{param}_volume needs --{param}: where the job sees the volume")
        kind = "bind" if volume.startswith("/") else "volume"
        mounts += [f"type={kind}", f"src={volume}", f"dst={path}", *(["readonly"] * readonly)]
    return _Paths(args, mounts)


def _hosts(nnodes, nproc_per_node, image, gpu, cpu_per_proc, mem_gb_per_proc, h, env) -> dict:
    """dist.ddp's job shape and per-host resources, scaled by the processes per host."""
    return dict(
        j=f"{nnodes}x{nproc_per_node}",
        image=image,
        gpu=nproc_per_node if gpu < 0 else gpu,
        cpu=cpu_per_proc * nproc_per_node,
        memMB=mem_gb_per_proc * 1024 * nproc_per_node,
        h=h,
        env=env,
    )


def plan(
    *script_args: str,
    config: str = "configs/demo.yaml",
    world: str = "2x8",
    device: str = "h100",
    image: str = torchx.IMAGE,
    cpu: int = 2,
    memMB: int = 8192,
) -> specs.AppDef:
    """Plan a config's embedding sharding offline (one CPU process, no GPU) and print it.

    Args:
        script_args: more arguments for python -m recsys_kdef.plan (--json plan.json, --compare 4x8, overrides)
        config: experiment YAML, relative to the working directory of the job
        world: the training job to plan for, NODESxPROCS
        device: device preset: h100, h200, a100, cpu or custom
        image: container image (docker / kubernetes) or working directory (local, slurm)
        cpu: CPUs
        memMB: memory in MB
    """
    return specs.AppDef(
        name="recsys_kdef_plan",
        roles=[
            specs.Role(
                name="plan",
                image=image,
                entrypoint="python",
                args=[
                    "-m",
                    "recsys_kdef.plan",
                    "--config",
                    config,
                    "--world",
                    world,
                    "--device",
                    device,
                    *script_args,
                ],
                resource=specs.Resource(cpu=cpu, gpu=0, memMB=memMB),
            )
        ],
    )
