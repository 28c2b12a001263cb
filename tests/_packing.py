"""Shared check of the packed engine: each member of a PackedNetwork computes what it computes alone."""

from __future__ import annotations

import torch

from walking_noise.batched import PackedNetwork
from walking_noise.noise import EVAL, NoiseStream, configure_noise


def assert_members_compute_alone_what_the_pack_computes(members: list, noises: list, x: torch.Tensor, *,
                                                        at: tuple[int, int, int], tol: float) -> None:
    """Pack ``members`` with ``noises`` and member keys 11, 22, 33..., evaluate the pack and every unpacked member
    alone (its own noise and key) on ``x`` at stream position ``at`` = (epoch, phase, step), and require equal
    outputs within ``tol``. Runs on ``x``'s device."""
    packed = PackedNetwork(members).to(x.device)
    packed.configure(noises)
    keys = [11 * (k + 1) for k in range(len(members))]
    packed.use_stream(NoiseStream(keys))
    packed.eval()
    packed.stream.at(*at)
    with torch.no_grad():
        together = packed(x.unsqueeze(0).expand(len(members), *x.shape))
    for k in range(len(members)):
        alone = packed.unpack(k).to(x.device)
        configure_noise(alone, noises[k])
        alone.use_stream(NoiseStream([keys[k]]))
        alone.eval()
        alone.stream.at(*at)
        with torch.no_grad():
            assert torch.allclose(alone(x), together[k], atol=tol, rtol=tol), k
