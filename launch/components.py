"""TorchX components for recsys_kdef: training and offline evaluation (thin wrappers over
`dist.ddp`) and the plan tool.

    torchx run -s local_cwd launch/components.py:train --nproc_per_node 2 -- --model.num_students 4
    torchx run -s slurm launch/components.py:train --nnodes 2 --nproc_per_node 8 --gpu 8 --config configs/demo.yaml
    torchx run -s local_cwd launch/components.py:evaluate --checkpoint runs/demo --data data/demo --nproc_per_node 4
    torchx run -s local_cwd launch/components.py:plan --world 2x8 --device h100 -- --json plan.json

The training job is `torchx run dist.ddp -j 2x8 --script recsys_kdef/train.py -- --config ...`;
`train` only fixes the script and puts the config first.
"""

# torchx 0.7's component linter reads annotations as written: it needs typing.Optional / Dict,
# not `X | None` (and no `from __future__ import annotations`).
from typing import Dict, Optional  # noqa: UP035

import torchx
from torchx import specs
from torchx.components import dist


def train(
    *script_args: str,
    config: str = "configs/demo.yaml",
    nnodes: int = 1,
    nproc_per_node: int = 2,
    image: str = torchx.IMAGE,
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    h: Optional[str] = None,  # noqa: UP045
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
        cpu: CPUs per host
        gpu: GPUs per host
        memMB: memory per host in MB
        h: a registered named resource (overrides cpu, gpu, memMB)
        max_retries: scheduler retries
        env: extra environment variables
    """
    return dist.ddp(
        "--config",
        config,
        *script_args,
        script="recsys_kdef/train.py",
        name="recsys_kdef",
        max_retries=max_retries,
        **_hosts(nnodes, nproc_per_node, image, cpu, gpu, memMB, h, env),
    )


def evaluate(
    *script_args: str,
    checkpoint: str,
    data: str,
    split: str = "test",
    nnodes: int = 1,
    nproc_per_node: int = 2,
    image: str = torchx.IMAGE,
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    h: Optional[str] = None,  # noqa: UP045
    env: Optional[Dict[str, str]] = None,  # noqa: UP006, UP045
) -> specs.AppDef:
    """Evaluate a checkpoint on a Parquet split with nnodes x nproc_per_node processes (any
    number: the checkpoint is resharded on load).

    Args:
        script_args: more options of python -m recsys_kdef.evaluate (--heads, --predictions, --out, --tmp-dir)
        checkpoint: a run directory (its best checkpoint) or one checkpoint directory
        data: dataset directory (schema.json and one directory per split)
        split: the split to evaluate
        nnodes: number of hosts
        nproc_per_node: processes per host
        image: container image (docker / kubernetes) or working directory (local, slurm)
        cpu: CPUs per host
        gpu: GPUs per host
        memMB: memory per host in MB
        h: a registered named resource (overrides cpu, gpu, memMB)
        env: extra environment variables
    """
    return dist.ddp(
        "--checkpoint",
        checkpoint,
        "--data",
        data,
        "--split",
        split,
        *script_args,
        m="recsys_kdef.evaluate",
        name="recsys_kdef_evaluate",
        **_hosts(nnodes, nproc_per_node, image, cpu, gpu, memMB, h, env),
    )


def _hosts(nnodes, nproc_per_node, image, cpu, gpu, memMB, h, env) -> dict:  # noqa: N803
    """dist.ddp's job shape and per-host resources, as both components pass them."""
    return dict(
        j=f"{nnodes}x{nproc_per_node}", image=image, cpu=cpu, gpu=gpu, memMB=memMB, h=h, env=env
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
