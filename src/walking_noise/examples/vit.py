"""A tiny vision transformer (ViT, Dosovitskiy et al. 2021) in the style of timm's ``VisionTransformer``, small
enough to train on MNIST on a CPU in minutes.

Patch embedding (a strided convolution), learned position embeddings added to the tokens, ``depth`` pre-norm
encoder blocks (LayerNorm, multi-head self-attention with separate Q, K and V projections and
``F.scaled_dot_product_attention``, a residual addition; LayerNorm, an MLP with GELU, a residual addition), a final
LayerNorm, the mean over tokens and a linear classifier. Q, K and V are separate ``nn.Linear`` layers (timm packs
them into one) so that each projection is its own injection point.

With ``points: operations`` (:mod:`walking_noise.operations`) each block has 14 points: ``norm1``, ``attn.q``,
``attn.k``, ``attn.v``, ``attn.qk_matmul``, ``attn.softmax``, ``attn.attn_v_matmul``, ``attn.proj``, ``add#1``,
``norm2``, ``mlp.fc1``, ``mlp.act``, ``mlp.fc2``, ``add#2``; before the blocks ``patch_embed`` and ``add`` (the
position embeddings), after them ``norm`` and ``head``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention: ``heads`` heads of ``dim / heads`` features, softmax(q k^T / sqrt(d)) v."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = (f(x).view(B, N, self.heads, C // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """The transformer's feed-forward block: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm encoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A vision transformer for ``image_size`` x ``image_size`` images of ``channels`` channels cut into
    ``patch`` x ``patch`` patches, each a token of ``dim`` features."""

    def __init__(self, image_size: int = 28, patch: int = 7, channels: int = 1, num_classes: int = 10,
                 dim: int = 32, depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of patch {patch}")
        self.patch_embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, patches, dim)
        tokens = self.blocks(tokens + self.pos_embed)
        return self.head(self.norm(tokens).mean(dim=1))


def tiny_vit(**kwargs: object) -> TinyViT:
    """The builder a study names: ``model: walking_noise.examples.vit:tiny_vit`` with ``model_kwargs`` (any
    argument of :class:`TinyViT`; the defaults fit MNIST: 16 patches of 7 x 7, 2 blocks of 32 features, 4 heads)."""
    return TinyViT(**kwargs)  # type: ignore[arg-type]
