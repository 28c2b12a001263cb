"""Training throughput of the one-model path vs the batched engine, printed as ratios measured in one run.

    .venv/bin/python benchmarks/batched_throughput.py [--threads 2] [--quick] [--device cuda] [--members 1,8,128]
        [--no-twin]

Rows, for the MLP on MNIST-sized input (1x28x28, real mnist_5k digits), LeNet-5 on CIFAR-sized input (3x32x32) and
CNN-S on speech-sized MFCCs (1x49x10; random tensors for both: throughput does not depend on the values), all with
BatchNorm and global additive noise:
- ``dataloader``: the one-model loop as a plain SEML experiment runs it (torch DataLoader over a TensorDataset);
- ``tensor``: the one-model path of ``training.train_run`` (data as tensors, no DataLoader);
- ``batched K``: ``batched.train_members`` with K members (seeds 0..K-1), convolutions computed by the method
  measured fastest per layer (``batched.choose_conv_method``; the choices and their timings are printed at the end);
- conv models also ``batched K, grouped conv``: the same with every packed convolution grouped over members (the
  engine before the measured choice);
- ``batched K, one seed, walking``: a walking campaign's pack (one seed, each member noisy at its own point after the
  input), whose members read one input tensor: one gathered batch instead of K, and a first convolution that may
  compute them all at once;
- ``batched K, torch twin noise``: the same with the noise drawn by the torch twin of ``walking_noise.gaussian``
  instead of its compiled generator (what the compiled generator is worth; ``--no-twin`` skips these rows).
Throughput is trained member-samples per second, per epoch with its evaluation and in the training loop alone
(``in-loop``: the steps, no evaluation); ratios are epoch rates against ``dataloader``. Every row runs with
``training.keep_freed_memory`` in effect (the library sets it in every training process; setting it here first
keeps the baseline rows from being slowed by page faults). The fraction of peak is model FLOPs (3x the forward
multiply-adds x 2) per second divided by the machine's measured single-precision matmul rate with the same thread
count.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from walking_noise import gaussian
from walking_noise.batched import CONV_METHOD_ENV, CONV_CHOICES, train_members
from walking_noise.config import NoiseConfig, RunConfig
from walking_noise.data import DatasetSplits, load_dataset
from walking_noise.models import build_model
from walking_noise.noise import configure_noise
from walking_noise.training import keep_freed_memory, move_dataset, train_run


def peak_flops(device: torch.device, seconds: float = 1.0) -> float:
    """Sustained float32 matmul rate (FLOP/s) of ``device`` (on the CPU: at the current thread count)."""
    size = 1024 if device.type == "cpu" else 8192
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    sync(device)
    return 2 * size**3 * n / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_flops_per_sample(model: nn.Module, shape: tuple[int, ...]) -> float:
    """3 x forward FLOPs (forward + two backward matmuls) of the conv/FC layers, per sample."""
    macs = 0

    def hook(module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            macs += out[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return 3 * 2 * macs


def dataloader_epoch(cfg: RunConfig, data: DatasetSplits) -> float:
    """One epoch the way a one-config-per-process SEML experiment trains: DataLoader batches from host memory (moved
    to the device per batch), then evaluation. Returns the seconds spent in the training loop."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, batchnorm=cfg.batchnorm).to(device)
    configure_noise(model, cfg.noise)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.train_x, data.train_y),
                                         batch_size=cfg.training.batch_size, shuffle=True)
    model.train()
    started = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
    sync(device)
    loop_s = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        for xb, yb in torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.test_x, data.test_y),
                                                  batch_size=1000):
            model(xb.to(device)).argmax(1).eq(yb.to(device)).sum()
    sync(device)
    return loop_s


def loop_seconds(out: object) -> float:
    """Training-loop seconds of what one timed call returned (a loop time, a RunResult or train_members' tuple)."""
    if isinstance(out, float):
        return out
    result = out[0][0] if isinstance(out, tuple) else out
    return result.extra["train_loop_s"]


def timed(fn, repeats: int = 2) -> tuple[float, float]:
    """Best (epoch seconds with evaluation, training-loop seconds) over ``repeats`` calls after a warm-up."""
    fn()  # warm-up: first-call allocations and kernel selection
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, (time.perf_counter() - start, loop_seconds(out)))
    return best


def random_sized(name: str, shape: tuple[int, ...], classes: int, n: int, n_test: int) -> DatasetSplits:
    """Random tensors shaped like ``name``'s samples: throughput does not depend on the values."""
    g = torch.Generator().manual_seed(0)
    return DatasetSplits(name=name, train_x=torch.randn(n, *shape, generator=g),
                         train_y=torch.randint(0, classes, (n,), generator=g),
                         test_x=torch.randn(n_test, *shape, generator=g),
                         test_y=torch.randint(0, classes, (n_test,), generator=g), num_classes=classes,
                         input_shape=shape, class_weights=None, preprocessing={}, augment=None)


def cifar_sized(n: int, n_test: int) -> DatasetSplits:
    return random_sized("cifar10", (3, 32, 32), 10, n, n_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="smaller K list and data (a smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (a lent GPU)")
    parser.add_argument("--members", default=None,
                        help="comma-separated K values for both models, e.g. 1,8,32,128,512 (default: 1,8,32,128 "
                             "for the MLP, 1,8,32 for LeNet-5)")
    parser.add_argument("--members-mlp", default=None, help="K values for the MLP alone")
    parser.add_argument("--members-conv", default=None, help="K values for LeNet-5 and CNN-S alone")
    parser.add_argument("--models", default="mlp,lenet5,cnn_s", help="comma-separated subset of mlp,lenet5,cnn_s")
    parser.add_argument("--no-twin", action="store_true",
                        help="skip the torch-twin noise rows (on the CPU they take most of the run's time; "
                             "benchmarks/generator_rate.py gives the generator's own rates)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    device = torch.device(args.device)
    peak = peak_flops(device)
    print(f"device {device}, threads {args.threads}, measured peak {peak / 1e9:.1f} GFLOP/s (float32 matmul), "
          f"noise generator: {gaussian.backend() if device.type == 'cpu' else 'torch'}")
    def ks(text: str | None) -> tuple[int, ...] | None:
        return tuple(int(k) for k in text.split(",")) if text else None

    suites = [("mlp", load_dataset("mnist_5k"),
               ks(args.members_mlp) or ks(args.members) or ((1, 8, 32) if args.quick else (1, 8, 32, 128))),
              ("lenet5", cifar_sized(2000 if args.quick else 4000, 1000),
               ks(args.members_conv) or ks(args.members) or ((1, 8) if args.quick else (1, 8, 32))),
              ("cnn_s", random_sized("speech_commands", (1, 49, 10), 12, 1000 if args.quick else 2000, 500),
               ks(args.members_conv) or ks(args.members) or ((1, 8) if args.quick else (1, 8, 32)))]
    suites = [suite for suite in suites if suite[0] in args.models.split(",")]
    for model_name, host_data, ks in suites:
        data = move_dataset(host_data, device) if device.type != "cpu" else host_data

        def cfg(seed: int, **noise: object) -> RunConfig:
            return RunConfig.from_dict({"dataset": data.name, "model": model_name, "batchnorm": True,
                                        "seed": seed, "device": args.device, "training": {"epochs": 1},
                                        "noise": {"kind": "additive", "noise_std": 0.1, **noise}})
        noisy_points = configure_noise(build_model(model_name, data.input_shape, data.num_classes, batchnorm=True),
                                       NoiseConfig(kind="additive", noise_std=0.1))[1:]  # not the input, not BN

        def walking_cfg(i: int) -> RunConfig:
            return cfg(0, placement="walking", injection_layer=noisy_points[i % len(noisy_points)])
        flops = training_flops_per_sample(build_model(model_name, data.input_shape, data.num_classes, batchnorm=True),
                                          data.input_shape)
        n = len(data.train_x)

        def rates(fn, members: int = 1, repeats: int = 2) -> tuple[float, float]:
            epoch, loop = timed(fn, repeats)
            return n * members / epoch, n * members / loop

        rows = [("dataloader (SEML-style)", *rates(lambda: dataloader_epoch(cfg(0), host_data))),
                ("tensor (train_run)", *rates(lambda: train_run(cfg(0), data)))]
        for k in ks:
            configs = [cfg(s) for s in range(k)]
            rows.append((f"batched K={k}", *rates(lambda: train_members(configs, data), k, repeats=1)))
            if model_name != "mlp" and k > 1:
                # the packed convolution before it was chosen by measurement: grouped over members
                os.environ[CONV_METHOD_ENV] = "grouped"
                rows.append((f"batched K={k}, grouped conv", *rates(lambda: train_members(configs, data), k,
                                                                    repeats=1)))
                del os.environ[CONV_METHOD_ENV]
            if k > 1:
                # a walking campaign's pack: one seed, each member noisy at its own point after the input, so all
                # members read one input tensor (the first convolution computes them at once)
                walking = [walking_cfg(p) for p in range(k)]
                rows.append((f"batched K={k}, one seed, walking", *rates(lambda: train_members(walking, data), k,
                                                                         repeats=1)))
        if not args.no_twin:
            configs = [cfg(s) for s in range(ks[-1] if model_name == "mlp" else ks[1])]
            os.environ[gaussian.BACKEND_ENV] = "torch"
            rows.append((f"batched K={len(configs)}, torch twin noise",
                         *rates(lambda: train_members(configs, data), len(configs), repeats=1)))
            del os.environ[gaussian.BACKEND_ENV]
        base = rows[0][1]
        print(f"\n{model_name} on {data.input_shape}, {n} samples/epoch, {flops / 1e6:.2f} MFLOP/sample trained")
        print(f"{'path':<36}{'epoch samples/s':>16}{'ratio':>7}{'% peak':>8}{'in-loop samples/s':>19}{'% peak':>8}")
        for name, rate, loop_rate in rows:
            print(f"{name:<36}{rate:>16.0f}{rate / base:>7.2f}{100 * rate * flops / peak:>7.1f}%"
                  f"{loop_rate:>19.0f}{100 * loop_rate * flops / peak:>7.1f}%")
    if CONV_CHOICES:
        print("\npacked convolutions, method measured per shape (ms per forward + backward):")
        for key, (method, timings) in CONV_CHOICES.items():
            print(f"  input {key[0]}, weight {key[1]}: " + ", ".join(f"{m} {1e3 * t:.1f}" for m, t in timings.items())
                  + f" -> {method}")


if __name__ == "__main__":
    main()
