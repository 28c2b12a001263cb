"""Simulated campaigns with a known midpoint: what an error of mu is checked against (coverage, pulls).

A campaign measures one accuracy-vs-noise curve: ``n_seeds`` seeds at every level of a grid (or, like an adaptive
search, fewer seeds on the plateaus). Its runs are drawn the way a campaign's runs vary:

* **the population curve** is Eq. 1 on the fit axis (noise std, or log10 of it), midpoint ``mu``, width ``sigma``
  (fit-axis units, negative: accuracy falls), upper plateau ``a_max``, lower plateau ``a_min``;
* **a seed random effect**: seed k's curve has its midpoint shifted by ``tau_mu * z_k`` (fit-axis units) and its
  upper plateau by ``tau_amax * z'_k`` (accuracy), the same at every level (a seed's init and data order travel with
  it through the grid); the estimand is the population midpoint ``mu``, around which the seeds scatter;
* **test-set noise**: a run's accuracy is Binomial(``n_test``, p) / ``n_test`` with p its seed's curve at its level.

:func:`simulate` draws one campaign; ``benchmarks/fit_coverage.py`` and the tests of the errors use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit


@dataclass(frozen=True)
class Design:
    """One simulated campaign design. Noise levels in noise-std units; ``mu`` in noise-std units; ``sigma`` and
    ``tau_mu`` in fit-axis units (decades on the log10 axis); plateaus and ``tau_amax`` in accuracy (fraction)."""

    name: str
    levels: tuple[float, ...]
    mu: float
    sigma: float
    n_seeds: int = 3
    axis: str = "linear"
    a_max: float = 0.98
    a_min: float = 0.10
    n_test: int = 10_000
    tau_mu: float = 0.0
    tau_amax: float = 0.0
    #: seeds measured at the levels off the slope (None: all of them); an adaptive search measures its coarse levels
    #: with fewer seeds than the slope
    plateau_seeds: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def position(self) -> float:
        """mu on the fit axis: the value an interval on that axis must cover."""
        return math.log10(self.mu) if self.axis == "log10" else self.mu

    def axis_of(self, x: np.ndarray) -> np.ndarray:
        return np.log10(x) if self.axis == "log10" else np.asarray(x, dtype=float)


def curve_probability(design: Design, t: np.ndarray, shift: float = 0.0, amax_shift: float = 0.0) -> np.ndarray:
    """Accuracy of a seed whose midpoint is shifted by ``shift`` and upper plateau by ``amax_shift``, at fit-axis
    positions ``t`` (Eq. 1, clipped to [0, 1])."""
    a_max = min(design.a_max + amax_shift, 1.0)
    p = design.a_min + (a_max - design.a_min) * expit((t - design.position - shift) / design.sigma)
    return np.clip(p, 0.0, 1.0)


def slope_levels(design: Design, fraction: float = 0.05) -> np.ndarray:
    """Which levels lie on the population curve's slope: more than ``fraction`` of the drop from either plateau."""
    t = design.axis_of(np.asarray(design.levels, dtype=float))
    f = expit((t - design.position) / design.sigma)
    return (f > fraction) & (f < 1 - fraction)


def seed_effects(design: Design, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The seeds' draws of one campaign: standard normal (z for the midpoint, z' for the clean plateau) per seed."""
    return rng.standard_normal(design.n_seeds), rng.standard_normal(design.n_seeds)


def simulate(design: Design, rng: np.random.Generator,
             effects: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One campaign of ``design``: (noise_std, accuracy, seed) per run. ``effects``: the seeds' standard normal
    draws (:func:`seed_effects`), to measure two curves with the same seeds (default: new draws)."""
    levels = np.asarray(design.levels, dtype=float)
    t = design.axis_of(levels)
    z_mu, z_amax = effects if effects is not None else seed_effects(design, rng)
    shifts, amax = design.tau_mu * np.asarray(z_mu), design.tau_amax * np.asarray(z_amax)
    on_slope = slope_levels(design)
    xs, ys, ss = [], [], []
    for k in range(design.n_seeds):
        at = np.ones(levels.size, dtype=bool)
        if design.plateau_seeds is not None and k >= design.plateau_seeds:
            at = on_slope
        p = curve_probability(design, t[at], shifts[k], amax[k])
        xs.append(levels[at])
        ys.append(rng.binomial(design.n_test, p) / design.n_test)
        ss.append(np.full(int(at.sum()), k))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ss)
