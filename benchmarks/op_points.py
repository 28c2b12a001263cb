"""What operation points (``points: operations``, :mod:`walking_noise.operations`) cost on a CPU.

1. Point discovery: building a :class:`walking_noise.points.NoisyNetwork` (one traced forward pass on a sample of
   the input shape) of a torchvision ResNet-50 on 224 x 224 images and of a 12-layer ``nn.TransformerEncoder``
   classifier (d_model 256, 8 heads, 64 tokens), with ``points: modules`` and ``points: operations`` (issue: under
   10 s each).
2. A forward pass with no point injecting, against the bare model, as ratios (issue: at most 1.10 for both point
   sets): with no operation point injecting, the operation mode is never entered and the module points' hooks are
   those of ``points: modules``.
3. For scale: a forward pass with one operation point injecting (the mode sees every torch call of the pass).

    python benchmarks/op_points.py            # about a minute on one core

Torch runs on one thread; each timing is the median of ``--repeats`` forward passes in eval mode without gradient.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from walking_noise.config import NoiseConfig  # noqa: E402
from walking_noise.noise import configure_noise  # noqa: E402
from walking_noise.points import NoisyNetwork  # noqa: E402


class EncoderClassifier(nn.Module):
    """A 12-layer ``nn.TransformerEncoder`` over (batch, tokens, 256) with a mean-pooled linear head."""

    def __init__(self, layers: int = 12, dim: int = 256):
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, nhead=8, dim_feedforward=4 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def _medians_s(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each call, timed in interleaved rounds (one call of each per round), so that a machine
    shared with other work slows all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(name: str, build: Callable[[], nn.Module], shape: tuple[int, ...], batch: int, repeats: int) -> None:
    model = build().eval()
    nets = {}
    for points in ("modules", "operations"):
        copy = build()  # its own copy: a NoisyNetwork hooks the leaves of the model it wraps
        copy.load_state_dict(model.state_dict())
        started = time.perf_counter()
        nets[points] = NoisyNetwork(name, copy, shape, 10, points=points).eval()
        found = len(nets[points].injection_points)
        print(f"{name}: discovery of {found} points ({points}) {time.perf_counter() - started:.2f} s")
    x = torch.randn(batch, *shape)
    net = nets["operations"]
    op = next(p for p in net.injection_points if p.op is not None)
    injecting = NoisyNetwork(name, build(), shape, 10, points="operations").eval()
    configure_noise(injecting, NoiseConfig(kind="additive", noise_std=0.1, placement="walking",
                                           injection_layer=op.index))
    calls = {"bare": lambda: model(x), "modules": lambda: nets["modules"](x), "operations": lambda: net(x),
             "injecting": lambda: injecting(x)}
    with torch.no_grad():
        medians = _medians_s(calls, repeats)
    print(f"{name}: bare forward (batch {batch}) {medians['bare'] * 1e3:.1f} ms")
    for points in ("modules", "operations"):
        print(f"{name}: forward with no point injecting, points {points}: {medians[points] / medians['bare']:.3f} "
              f"x bare")
    print(f"{name}: forward with one operation point injecting ({op.name}): "
          f"{medians['injecting'] / medians['bare']:.3f} x bare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    import torchvision

    measure("resnet50", lambda: torchvision.models.resnet50(num_classes=10), (3, 224, 224), 4, args.repeats)
    measure("transformer12", EncoderClassifier, (64, 256), 16, args.repeats)


if __name__ == "__main__":
    main()
