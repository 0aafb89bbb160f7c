"""The planner sized to the CUDA device (memory, bandwidth by name, one-GPU layouts), with a
stand-in for torch.cuda.get_device_properties so it runs on CPU."""

from types import SimpleNamespace

import torch

from recsys_kdef.config import PlannerConfig
from recsys_kdef.plan.device import GB, hbm_bandwidth_gbps, sized_for_device

CUDA = torch.device("cuda", 0)
H200 = SimpleNamespace(name="NVIDIA H200", total_memory=150_754_820_096)


def test_null_figures_come_from_the_device_and_one_gpu_plans_table_wise():
    cfg = sized_for_device(PlannerConfig(), CUDA, world_size=1, properties=H200)
    assert cfg.hbm_cap_gb == H200.total_memory / GB  # ~140.4 GiB, not TorchRec's 32
    assert cfg.hbm_bw_gbps == 4800
    assert cfg.sharding_types == ["table_wise"]


def test_set_figures_several_gpus_and_cpu_are_left_alone():
    mine = PlannerConfig(hbm_cap_gb=60, hbm_bw_gbps=1000, sharding_types=["row_wise"])
    assert sized_for_device(mine, CUDA, 1, H200) == mine
    many = sized_for_device(PlannerConfig(), CUDA, world_size=8, properties=H200)
    assert many.sharding_types is None and many.hbm_cap_gb > 140
    assert sized_for_device(PlannerConfig(), torch.device("cpu"), 1) == PlannerConfig()


def test_bandwidth_by_name_takes_the_most_specific_entry():
    assert hbm_bandwidth_gbps("NVIDIA H100 PCIe") == 2000
    assert hbm_bandwidth_gbps("NVIDIA H100 80GB HBM3") == 3350
    assert hbm_bandwidth_gbps("NVIDIA A100-SXM4-80GB") == 2039
    unknown = SimpleNamespace(name="Some GPU", total_memory=16 * GB)
    cfg = sized_for_device(PlannerConfig(), CUDA, 2, unknown)
    assert cfg.hbm_bw_gbps is None and cfg.hbm_cap_gb == 16
