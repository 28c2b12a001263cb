"""Shared probes of noisy networks: the outputs of many forward passes, their moments against a formula, and the
output of every injection point in one pass."""

from __future__ import annotations

import torch

from walking_noise.noise import EVAL, NoiseStream

PASSES = 4000


def outputs(model, x: torch.Tensor, passes: int = PASSES) -> torch.Tensor:
    """(passes, *output) of ``model`` on ``x``, each pass a different draw coordinate of one stream."""
    model.use_stream(NoiseStream([12345]))
    model.eval()
    outs = []
    with torch.no_grad():
        for step in range(passes):
            model.stream.at(0, EVAL, step)
            outs.append(model(x))
    return torch.stack(outs).double()


def check_moments(outs: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """Mean and variance over passes (dim 0) equal ``mean`` and ``var`` within 5 standard errors: sqrt(var / n) for
    the mean, var * sqrt(2 / (n - 1)) for the variance (Gaussian)."""
    n = outs.shape[0]
    got_mean, got_var = outs.mean(0), outs.var(0)
    assert torch.all((got_mean - mean).abs() <= 5 * (var / n).sqrt() + 1e-6), (got_mean, mean)
    assert torch.all((got_var - var).abs() <= 5 * var * (2 / (n - 1)) ** 0.5 + 1e-9), (got_var, var)


def activations(model, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """The output of every injection point of ``model`` on ``x`` (eval mode, no gradient), by point index."""
    seen: dict[int, torch.Tensor] = {}
    handles = [p.injection.register_forward_hook(lambda _m, _i, o, k=p.index: seen.__setitem__(k, o.detach().clone()))
               for p in model.injection_points]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen
