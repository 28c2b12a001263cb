"""What only a GPU can show (skipped without CUDA; run by benchmarks/gpu_suite.sh on a lent GPU): device handling,
a member's draws on the GPU bit-identical to the CPU's, the packed conv layout's noise on the GPU, and a packed
training on the GPU measuring what the CPU measures."""

from __future__ import annotations

import pytest
import torch

from walking_noise import gaussian
from walking_noise.batched import train_members
from walking_noise.config import NoiseConfig, RunConfig
from walking_noise.models import build_model
from walking_noise.noise import EVAL
from walking_noise.training import (
    load_run_dataset,
    move_dataset,
    resolve_device,
    train_run,
)

from _packing import assert_members_compute_alone_what_the_pack_computes

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_suite.sh)")


@cuda
def test_auto_and_cuda_devices_train_on_the_gpu():
    assert resolve_device("auto").type == "cuda"
    cfg = RunConfig.from_dict({"dataset": "mnist_5k", "device": "cuda", "max_train": 512, "max_test": 256,
                               "training": {"epochs": 1}, "noise": {"kind": "additive", "noise_std": 0.3}})
    result = train_run(cfg)
    assert result.device.startswith("cuda") and 0.1 < result.final_accuracy <= 1.0


@cuda
@pytest.mark.parametrize("n", [1, 255, 256, 100_003])
def test_a_members_gpu_draws_are_its_cpu_draws_bit_for_bit(n):
    keys = [3, 2**63 + 17, 2**64 - 1]
    on_gpu = gaussian.philox_normal(keys, (5, 6, 7), n, device="cuda", active=[True, False, True]).cpu()
    on_cpu = gaussian.philox_normal(keys, (5, 6, 7), n, active=[True, False, True])
    assert torch.equal(on_gpu, on_cpu)


@cuda
@pytest.mark.parametrize("site, distribution", [("activation", "gaussian"), ("weight", "gaussian"),
                                                ("mac", "gaussian"), ("activation", "uniform"), ("weight", "uniform")])
def test_packed_conv_members_on_the_gpu_get_their_one_model_noise(site, distribution):
    torch.manual_seed(0)
    members = [build_model("lenet5", (3, 32, 32), 10) for _ in range(3)]
    noises = [NoiseConfig(kind="multiplicative", noise_std=s, site=site, distribution=distribution)
              for s in (0.1, 0.4, 0.0)]
    x = torch.randn(8, 3, 32, 32, device="cuda")
    assert_members_compute_alone_what_the_pack_computes(members, noises, x, at=(1, EVAL, 2), tol=1e-3)


@cuda
def test_a_packed_gpu_training_measures_what_the_cpu_measures():
    base = {"dataset": "mnist_5k", "model": "mlp", "batchnorm": True, "training": {"epochs": 2},
            "noise": {"kind": "additive", "noise_std": 0.3}}
    configs = {device: [RunConfig.from_dict({**base, "seed": s, "device": device}) for s in range(4)]
               for device in ("cpu", "cuda")}
    data = load_run_dataset(configs["cpu"][0])
    cpu, _, _ = train_members(configs["cpu"], data)
    gpu, _, _ = train_members(configs["cuda"], move_dataset(data, torch.device("cuda")))
    for a, b in zip(cpu, gpu):  # same draws; the kernels round differently
        assert abs(a.final_accuracy - b.final_accuracy) <= 0.02
