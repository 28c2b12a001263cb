"""Adaptive noise grids: find a curve's transition with fewer runs than a dense fixed grid.

Instead of training every seed at every level of a dense grid of s, the search measures a coarse grid, then refines
where the logistic of Eq. 1 is least certain, and stops as soon as the midpoint noise level is known to the target
relative error (``mu_err / mu``):

1. measure ``initial_levels`` levels evenly spaced on the fit axis (log10 or linear) between ``low`` and ``high``;
2. while the fit does not converge: bisect the bracket where the level means cross half-way between the highest and
   lowest mean (or, if the curve never leaves a plateau, widen the range towards the missing plateau);
3. once it converges (``design="variance"``, the default): add the runs that shrink the fit's predicted Var(mu)
   the most per run: a new level with ``refine_seeds`` seeds, or the seeds a measured level lacks. The prediction
   is the Fisher information of Eq. 1's four parameters with Eq. 2's weights, so runs go to the slope when the
   midpoint limits mu and to a plateau when an asymptote does (a broad curve that starts falling at s = 0);
   ``design="offsets"`` instead adds levels at ``mu + u * |sigma|`` for u in 0, -1, 1, -0.5, 0.5, -2, 2, ...;
4. when no such run is left: add the seeds a level near mu lacks, or split the widest gap between levels within
   2 |sigma| of mu, instead of bisecting or widening a range whose transition is already found;
5. stop when the relative error of mu is at most ``target_rel_err`` and at least ``min_levels`` levels are measured,
   or after ``max_runs`` runs.

Which relative error is a versioned setting, ``error``: ``calibrated`` (the default) is the error the report quotes,
:func:`walking_noise.fit.errors.reported_error` / mu (half the 68 % interval from the seed jackknife with Student t);
``covariance`` is the rule before issue 27, the fit's chi2-scaled covariance error ``mu_err / mu``. The studies whose
runs were chosen under the old rule pin ``adaptive.error: covariance`` in their YAML, so that replaying their
searches against the stored runs (:func:`walking_noise.selection.search_runs`) still finds the runs they chose.

Coarse levels (steps 1-2) are measured with the first ``coarse_seeds`` seeds, refinement levels with the first
``refine_seeds``:
the repeats matter where the fit is decided, not on the plateaus. ``measure(levels, seeds)`` trains (or looks up)
every given seed at each level and returns (noise_std, seed, accuracy) rows, so
the same search drives real training (``benchmarks/adaptive_grid.py``) and the synthetic curves of the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from walking_noise.config import NOISE_CEILING
from walking_noise.fit import FitResult, fit_midpoint
from walking_noise.fit.errors import reported_error

Measure = Callable[[Sequence[float], Sequence[int]], list[tuple[float, int, float]]]
_OFFSETS = (0.0, -1.0, 1.0, -0.5, 0.5, -2.0, 2.0, -1.5, 1.5, -0.25, 0.25, -3.0, 3.0)
#: ``AdaptiveGrid.error``: which relative error of mu the stopping rule reads (module docstring).
ERRORS = ("calibrated", "covariance")


@dataclass(frozen=True)
class AdaptiveGrid:
    """Search settings: noise range (noise-std units), fit axis, stopping rule, refinement per round."""

    low: float
    high: float
    axis: str = "log10"
    initial_levels: int = 5
    levels_per_round: int = 1
    target_rel_err: float = 0.05
    max_runs: int = 200
    max_widenings: int = 3
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    coarse_seeds: int = 2
    refine_seeds: int = 3
    #: Levels to measure before the error target may stop the search: a 4-parameter logistic through five coarse
    #: levels can claim a small mu error with one level on its slope; this buys levels where the curve falls.
    min_levels: int = 0
    #: How a converged search places its next runs: ``variance`` (default), where they shrink the fit's predicted
    #: Var(mu) most per run (new levels or more seeds at measured ones); ``offsets``, at mu + u |sigma| for fixed u.
    design: str = "variance"
    #: The error the stopping rule reads: ``calibrated`` (default), the report's quoted error; ``covariance``, the
    #: fit's covariance error (the rule the studies run before issue 27 pin, so that their replays stay the same).
    error: str = "calibrated"

    def __post_init__(self) -> None:
        if self.axis not in ("log10", "linear"):
            raise ValueError(f"unknown axis {self.axis!r}; valid choices: log10, linear")
        if not 0 <= self.low < self.high or (self.axis == "log10" and self.low <= 0):
            raise ValueError(f"need 0 <= low < high (low > 0 on a log10 axis), got low={self.low}, high={self.high}")
        if self.high > NOISE_CEILING:
            raise ValueError(f"high={self.high:g} exceeds {NOISE_CEILING:g}, the largest noise float32 arithmetic "
                             f"represents; a search never widens past it either")
        if self.design not in ("variance", "offsets"):
            raise ValueError(f"unknown design {self.design!r}; valid choices: variance, offsets")
        if self.error not in ERRORS:
            raise ValueError(f"unknown error {self.error!r}; valid choices: {', '.join(ERRORS)} (a study whose "
                             f"runs were chosen before issue 27 pins covariance)")
        if self.initial_levels < 4:
            raise ValueError("initial_levels must be at least 4 (a logistic has four parameters)")

    def to_axis(self, s: float) -> float:
        return math.log10(s) if self.axis == "log10" else s

    def from_axis(self, t: float) -> float:
        """The noise level at axis position ``t``, never above :data:`NOISE_CEILING`."""
        return min(10.0**t if self.axis == "log10" else max(t, 0.0), NOISE_CEILING)


@dataclass
class AdaptiveResult:
    fit: FitResult
    rows: list[tuple[float, int, float]]
    rounds: list[list[float]] = field(default_factory=list)
    stopped_because: str = ""
    #: what each round did, parallel to ``rounds``: coarse, bisect, widen, refine or deepen
    steps: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.rows)

    @property
    def levels(self) -> list[float]:
        return sorted({r[0] for r in self.rows})


def relative_error(fit: FitResult, error: str = "calibrated") -> float:
    """The relative error of mu of a converged fit (inf otherwise) that the stopping rule reads: the quoted error
    (``error="calibrated"``) or the chi2-scaled covariance error ``mu_err`` (``"covariance"``) over mu."""
    err = reported_error(fit) if error == "calibrated" else fit.mu_err
    if not fit.converged or not fit.mu or err is None:
        return math.inf
    return err / fit.mu


def _fit(rows: list[tuple[float, int, float]], grid: AdaptiveGrid) -> FitResult:
    x, seeds, y = (np.array(col) for col in zip(*rows))
    return fit_midpoint(x, y, seeds=seeds, axis=grid.axis)


def _by_level(rows) -> dict[float, dict[int, float]]:
    """Measured accuracy per level and seed."""
    out: dict[float, dict[int, float]] = {}
    for s, seed, acc in rows:
        out.setdefault(s, {})[seed] = acc
    return out


def _deepen(rows, grid: AdaptiveGrid, fit: FitResult) -> tuple[list[float], list[int]]:
    """The measured level nearest mu (within 2 |sigma|) that lacks some of ``grid.seeds``, and those seeds: once
    the refinement offsets are used up, more repeats where the curve falls tighten mu more than plateau levels."""
    t_mu, width = grid.to_axis(fit.mu), abs(fit.sigma)  # type: ignore[arg-type]
    seen = _by_level(rows)
    for s in sorted(seen, key=lambda level: abs(grid.to_axis(level) - t_mu)):
        if abs(grid.to_axis(s) - t_mu) > 2 * width:
            break
        missing = [seed for seed in grid.seeds if seed not in seen[s]]
        if missing:
            return [s], missing
    return [], []


def _mu_variance_design(rows, grid: AdaptiveGrid, fit: FitResult) -> tuple[list[float], list[int], str]:
    """The next runs that shrink the fit's predicted Var(mu) the most per run (a c-optimal design step).

    Each run contributes ``w J J^T`` to the Fisher information of the four logistic parameters, with ``J`` the
    gradient of Eq. 1 at its level and ``w`` = 1 / (its level's repeat spread)^2, as Eq. 2 weights it. Candidates:
    the seeds a measured level lacks, and a new level (``refine_seeds`` seeds) on a fine grid over the measured
    range, its spread taken from the nearest measured level. Plateaus earn runs when the asymptotes limit mu (a
    curve whose upper plateau lies below the smallest level), the slope when the midpoint does.
    """
    t_mu, sig, da = grid.to_axis(fit.mu), float(fit.sigma), float(fit.delta_a)  # type: ignore[arg-type]

    def jac(t: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-np.clip((t - t_mu) / sig, -60, 60)))
        slope = da * p * (1 - p)
        return np.stack([-slope / sig, -slope * (t - t_mu) / sig**2, p, np.ones_like(t)], axis=1)

    seen = _by_level(rows)
    levels = sorted(seen)
    t_lv = np.array([grid.to_axis(s) for s in levels])
    floor = max(fit.spread_floor or 0.0, 1e-3)
    spread = np.array([max(float(np.std(list(seen[s].values()), ddof=1)) if len(seen[s]) > 1 else 0.0, floor)
                       for s in levels])
    counts = np.array([len(seen[s]) for s in levels])
    J = jac(t_lv)
    info = (J * (counts / spread**2)[:, None]).T @ J

    def var_mu(extra: np.ndarray) -> float:
        try:
            return float(np.linalg.inv(info + extra)[0, 0])
        except np.linalg.LinAlgError:
            return math.inf

    base = var_mu(np.zeros((4, 4)))
    best: tuple[float, list[float], list[int], str] = (0.0, [], [], "")
    for i, s in enumerate(levels):
        missing = [seed for seed in grid.seeds if seed not in seen[s]][:grid.refine_seeds]
        if missing and len(levels) >= grid.min_levels:  # below min_levels only new levels count
            gain = (base - var_mu(len(missing) / spread[i]**2 * np.outer(J[i], J[i]))) / len(missing)
            if gain > best[0]:
                best = (gain, [s], missing, "deepen")
    k = grid.refine_seeds
    gap = (t_lv[-1] - t_lv[0]) / 200
    for t in np.linspace(t_lv[0], t_lv[-1], 81)[1:-1]:
        if np.min(np.abs(t_lv - t)) < gap:
            continue
        j = jac(np.array([t]))[0]
        w = k / spread[int(np.argmin(np.abs(t_lv - t)))]**2
        gain = (base - var_mu(w * np.outer(j, j))) / k
        if gain > best[0]:
            best = (gain, [grid.from_axis(float(t))], list(grid.seeds[:k]), "refine")
    return best[1], best[2], best[3]


def _widest_gap(rows, grid: AdaptiveGrid, fit: FitResult) -> float:
    """The middle of the widest gap between measured levels within 2 |sigma| of mu: a new slope level."""
    t_mu, width = grid.to_axis(fit.mu), abs(fit.sigma)  # type: ignore[arg-type]
    lo, hi = t_mu - 2 * width, t_mu + 2 * width
    ts = sorted({lo, hi} | {t for t in (grid.to_axis(r[0]) for r in rows) if lo < t < hi})
    i = int(np.argmax(np.diff(ts)))
    return grid.from_axis((ts[i] + ts[i + 1]) / 2)


def _new_levels(rows, grid: AdaptiveGrid, fit: FitResult, widened: int) -> tuple[list[float], str]:
    measured = sorted({r[0] for r in rows})
    t_measured = np.array([grid.to_axis(s) for s in measured])
    spacing = np.min(np.diff(t_measured)) if len(t_measured) > 1 else 1.0
    if fit.converged and fit.mu is not None and fit.sigma is not None:
        t_mu, width = grid.to_axis(fit.mu), abs(fit.sigma)
        picks: list[float] = []
        for u in _OFFSETS:
            t = t_mu + u * width
            near = np.abs(np.append(t_measured, [grid.to_axis(p) for p in picks]) - t) < max(width, spacing) / 8
            if not near.any() and t_measured[0] <= t <= t_measured[-1]:
                picks.append(grid.from_axis(t))
            if len(picks) == grid.levels_per_round:
                break
        if picks:
            return picks, "refine"
    means = {s: np.mean([r[2] for r in rows if r[0] == s]) for s in measured}
    values = np.array([means[s] for s in measured])
    half = (values.max() + values.min()) / 2
    crossings = [i for i in range(len(values) - 1) if (values[i] - half) * (values[i + 1] - half) <= 0]
    spread = values.max() - values.min()
    if crossings and spread > 0.05 * max(abs(values.max()), 1e-12):
        i = crossings[0]
        lo, hi = t_measured[i], t_measured[i + 1]
        n = grid.levels_per_round
        picks = [lo + (hi - lo) * (k + 1) / (n + 1) for k in range(n)]
        if (hi - lo) > 1e-3 * (t_measured[-1] - t_measured[0]):  # else the bracket is resolved: widen instead
            return [grid.from_axis(t) for t in picks], "bisect"
    if widened < grid.max_widenings:  # never left a plateau: widen the range on both sides
        step = (t_measured[-1] - t_measured[0]) / 2
        lower = t_measured[0] - step
        wider = [grid.from_axis(t_measured[-1] + step)]  # stops at the float32 ceiling
        wider += [grid.from_axis(lower)] if grid.axis == "log10" or lower >= 0 else []
        wider = [s for s in wider if s not in measured]
        if wider:
            return wider, "widen"
    return [], ("no transition found in range" if measured[-1] < NOISE_CEILING
                else f"no transition found below the float32 ceiling {NOISE_CEILING:g}")


def find_transition(measure: Measure, grid: AdaptiveGrid) -> AdaptiveResult:
    """Search the transition of one accuracy-vs-noise curve; see the module docstring for the rule."""
    t0, t1 = grid.to_axis(grid.low), grid.to_axis(grid.high)
    first = [grid.from_axis(t) for t in np.linspace(t0, t1, grid.initial_levels)]
    coarse = grid.seeds[:grid.coarse_seeds]
    rows = list(measure(first, coarse))
    result = AdaptiveResult(_fit(rows, grid), rows, [first], steps=["coarse"])
    widened = 0
    while True:
        rel = relative_error(result.fit, grid.error)
        if rel <= grid.target_rel_err and len(result.levels) >= grid.min_levels:
            name = "mu_err/mu" if grid.error == "covariance" else "quoted error/mu"
            result.stopped_because = f"{name} {rel:.3g} <= target {grid.target_rel_err}"
            return result
        levels, seeds, how = (_mu_variance_design(result.rows, grid, result.fit)
                              if grid.design == "variance" and result.fit.converged else ([], [], ""))
        if not levels:
            levels, how = _new_levels(result.rows, grid, result.fit, widened)
            seeds = grid.seeds[:grid.refine_seeds] if how == "refine" else coarse
        if result.fit.converged and how not in ("refine", "deepen"):  # offsets used up: repeats, not a wider range
            deeper, missing = _deepen(result.rows, grid, result.fit)
            if deeper:
                levels, seeds, how = deeper, missing, "deepen"
            else:  # every slope level has every seed: split the widest gap on the slope
                levels, seeds, how = [_widest_gap(result.rows, grid, result.fit)], grid.seeds[:grid.refine_seeds], \
                    "refine"
        if not levels:
            result.stopped_because = how
            return result
        if result.runs + len(seeds) * len(levels) > grid.max_runs:
            result.stopped_because = f"run budget {grid.max_runs} reached"
            return result
        widened += how == "widen"
        result.rows += measure(levels, seeds)
        result.rounds.append(levels)
        result.steps.append(how)
        result.fit = _fit(result.rows, grid)
