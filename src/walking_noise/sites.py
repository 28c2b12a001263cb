"""Where noise acts and how it is distributed: one table of noise sites and one of noise distributions.

A site (``noise.site``: activation, weight, MAC) or a distribution (``noise.distribution``: gaussian, uniform) is
one entry here, read by the config's validation (:mod:`walking_noise.config`), both engines, the command line and
the report. This module needs no torch, so an analysis can validate 200,000 stored configs without it; the torch
side of an entry lives in :mod:`walking_noise.noise`, keyed by the entry's name: how a site applies its noise
(``SITE_NOISE``) and how a distribution's draws are made from the generator's standard normals (``UNIT_DRAWS``).

A new site is one :class:`NoiseSite` here, its function in ``SITE_NOISE`` and a test of its formula
(``tests/test_sites.py``); a new distribution is one :class:`NoiseDistribution`, its transform in ``UNIT_DRAWS``
and tests of its moments (``tests/test_noise.py``).

Where a site can act is read off the kind of an injection point (:data:`POINT_KINDS`): the kinds of module points
(the output of a leaf module) and of operation points (a torch operation inside a ``forward``,
:mod:`walking_noise.operations`), and which point sets a run may choose (:data:`POINT_SETS`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The kinds of injection point (:attr:`walking_noise.points.InjectionPoint.kind`), what each is, and whether
#: module points (the output of a leaf module), operation points (:mod:`walking_noise.operations`) or both have it.
POINT_KINDS: dict[str, str] = {
    "input": "the model's input (point 0)",
    "conv": "a convolution by stored weights: a Conv or ConvTranspose module, or F.conv*d / F.conv_transpose*d",
    "linear": "a product with stored weights: a Linear module, or F.linear / a matmul with a parameter operand "
              "(nn.MultiheadAttention's in_proj and out_proj)",
    "matmul": "an operation: a product of two activations (q @ k^T, attention @ v; no stored weight)",
    "add": "an operation: the sum of two tensors (a residual addition `out += identity`, `x + pos_embed`)",
    "mul": "an operation: the elementwise product of two tensors (a gate, a layer scale)",
    "norm": "a normalisation: a BatchNorm/LayerNorm/GroupNorm/InstanceNorm module, or F.layer_norm and friends",
    "activation": "a nonlinearity: a ReLU/GELU/... module, or F.relu, torch.tanh, x.sigmoid() and friends",
    "softmax": "an operation: softmax or log_softmax (the attention weights)",
    "pool": "a pooling module, or F.max_pool*d / F.avg_pool*d / F.adaptive_*_pool*d",
    "other": "any other leaf module (Dropout, Embedding, a custom leaf)",
}
#: Injection points of these kinds hold a product with stored weights: where read-out (weight) noise acts.
LAYER_KINDS = ("conv", "linear")
#: Injection points of these kinds are multiply-accumulates: where per-product (MAC) noise acts. A matmul of two
#: activations is one too, its MAC noise the same formula with both operands as inputs.
MAC_KINDS = LAYER_KINDS + ("matmul",)
#: Which injection points a run's model has (``points`` of a run config): ``modules``, the input and the output of
#: every leaf module call (the paper's, the default); ``operations``, those and every operation of
#: :data:`POINT_KINDS` inside a ``forward`` (:mod:`walking_noise.operations`); or a comma-separated list of kinds,
#: the input and the points of those kinds among the operation-level points (``matmul,softmax``).
POINT_SETS = ("modules", "operations")


def check_points(value: object) -> str:
    """``value`` as a valid point set (:data:`POINT_SETS`, or kinds of :data:`POINT_KINDS` as a comma-separated
    string or a list), in one canonical spelling: a list of kinds is sorted in table order and joined by commas, so
    that equal selections are one run identity. Else a ``ValueError`` naming the choices."""
    if value in POINT_SETS:
        return str(value)
    kinds = [k.strip() for k in value.split(",")] if isinstance(value, str) else value
    choices = [k for k in POINT_KINDS if k != "input"]
    if not isinstance(kinds, (list, tuple)) or not kinds or any(k not in choices for k in kinds):
        raise ValueError(f"unknown points {value!r}: give {' or '.join(POINT_SETS)}, or injection point kinds to "
                         f"keep (a comma-separated list, the input is always point 0) out of {', '.join(choices)}")
    return ",".join(k for k in choices if k in kinds)


def selected_kinds(points: str) -> frozenset[str] | None:
    """The point kinds a canonical point set keeps (None: every kind of its discovery)."""
    return None if points in POINT_SETS else frozenset(points.split(",")) | {"input"}


@dataclass(frozen=True)
class NoiseSite:
    """One place where an analog accelerator is noisy (paper section III.A).

    ``tag_offset``: the site's draw tags are ``tag_offset + 0`` (multiplicative) and ``tag_offset + 1`` (additive)
    (:class:`walking_noise.noise.NoiseStream`): distinct per site, so two sites never share random numbers, and part
    of every stored run's draws, so an entry's offset never changes (tags are 4 bits: offsets 0 to 14).
    ``kinds``: the kinds of injection point where the site can act (None: every point). ``points``: those points in
    words, for error messages. ``in_layer``: the noise acts inside the layer's computation (it needs the layer's
    input and weights), not on the point's output. ``distributions``: the noise distributions the site can draw
    (None: every one). ``marker`` and ``color``: the site's curves in the report's figures (matplotlib).
    """

    name: str
    description: str
    tag_offset: int
    marker: str
    color: str
    kinds: tuple[str, ...] | None = None
    points: str = "every point"
    in_layer: bool = False
    distributions: tuple[str, ...] | None = None

    def acts_at(self, kind: str | None) -> bool:
        """Whether the site can act at an injection point of ``kind``: where walking placement may put it."""
        return self.kinds is None or kind in self.kinds

    def placed_globally(self, kind: str | None, is_batchnorm: bool) -> bool:
        """Whether global placement puts noise at a point: where the site can act, except BatchNorm outputs (the
        paper's rule for activations, which keeps the injected amount equal with and without BN)."""
        return self.acts_at(kind) and not is_batchnorm

    @property
    def where(self) -> str:
        """`` at the weight site (Linear/Conv points only)`` for a restricted site, else empty: for error messages."""
        return "" if self.kinds is None else f" at the {self.name} site ({self.points} only)"

    def check_distribution(self, distribution: str) -> None:
        """Raise a ``ValueError`` if this site cannot draw ``distribution``."""
        if self.distributions is not None and distribution not in self.distributions:
            raise ValueError(f"noise.distribution {distribution} is not available at the {self.name} site, which "
                             f"draws {', '.join(self.distributions)} only ({self.description}); choose "
                             f"noise.distribution {' or '.join(self.distributions)}, or another noise.site")


@dataclass(frozen=True)
class NoiseDistribution:
    """The law of the injected noise, as unit-variance draws ``u`` that the noise std ``s`` scales: a
    multiplicative factor ``1 + s u``, an additive term ``s u``. Every distribution is made from the same standard
    normals of a run's stream, so the engines stay bit-identical and a draw's coordinate means the same for all."""

    name: str
    description: str


SITES: dict[str, NoiseSite] = {site.name: site for site in (
    NoiseSite("activation", "the output of a layer, the paper's: x * (1 + s u) or x + s u per element and forward "
              "pass", tag_offset=0, marker="o", color="tab:orange"),
    NoiseSite("weight", "read-out noise: a Linear or Conv layer computes with W * (1 + s u) or W + s u, one draw per "
              "weight element and forward pass, shared by the samples of a batch", tag_offset=2, marker="s",
              color="tab:purple", kinds=LAYER_KINDS, points="Linear/Conv points", in_layer=True),
    # the MAC site draws the sum over a layer's fan-in of per-product noise in closed form, y_j + N(0, s^2 sum_i
    # (w_ji x_i)^2): exact for Gaussian products only (a sum of uniform products is not uniform)
    NoiseSite("mac", "noise of each product of a multiply-accumulate, drawn as its exact Gaussian sum per output "
              "element and forward pass", tag_offset=4, marker="D", color="tab:brown", kinds=MAC_KINDS,
              points="Linear/Conv points and matmuls", in_layer=True, distributions=("gaussian",)),
)}

DISTRIBUTIONS: dict[str, NoiseDistribution] = {d.name: d for d in (
    NoiseDistribution("gaussian", "u ~ N(0, 1), the paper's: a factor N(1, s^2), an additive term N(0, s^2)"),
    NoiseDistribution("uniform", "u ~ U(-sqrt(3), sqrt(3)), variance 1: a factor U(1 - sqrt(3) s, 1 + sqrt(3) s), "
                      "an additive term U(-sqrt(3) s, sqrt(3) s); u = sqrt(3) erf(z / sqrt(2)) = sqrt(3) (2 Phi(z) - "
                      "1) of the standard normal draw z"),
)}
