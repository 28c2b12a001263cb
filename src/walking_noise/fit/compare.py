"""Which midpoints differ: differences of log10 mu between fits, their tests, and the groups they leave.

"Is point i more sensitive than point j?" is a question about ``d = log10 mu_i - log10 mu_j`` (decades: a ratio of
midpoints, whatever the fit axis). Two fits of one walking study are measured with the same seeds, and a seed's
offset can travel with it from one point (or one setting) to the next, so the error of ``d`` comes from the seeds,
paired: leave seed k out of *both* fits (their ``FitResult.jackknife_mu``), take ``d_(k)``, and the jackknife
standard error of those, with n - 1 degrees of freedom and a Student t test. This is the interval of
:mod:`walking_noise.fit.errors` applied to a difference, and calibrated the same way (``tests/test_compare.py``: a
known difference is found, a null difference is found at most at the nominal rate).

* Fits whose seed labels differ: their jackknife errors in quadrature, Welch-Satterthwaite degrees of freedom.
* A fit without a jackknife (no seeds): its covariance error, normal quantiles, flagged.
* A fit bracketed between levels: no law inside the bracket, so the pair differs only where the bracket and the other
  fit's 95 % interval do not overlap (p = 0, else 1), flagged.

Many pairs: :func:`holm` adjusts the p-values of a family (e.g. all pairs of one figure) so that the chance of any
false "differs" is at most alpha; :func:`letters` sums a family up as a compact letter display: points that share a
letter cannot be told apart (Piepho 2004, insert-absorb).
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from walking_noise.fit.errors import FLAG_BRACKET, FLAG_TWO_SEEDS
from walking_noise.fit.result import FitResult

#: The familywise error rate of the tests (Holm).
ALPHA = 0.05


@dataclass
class Difference:
    """``d = log10 mu_a - log10 mu_b`` (decades), its standard error and law (Student t with ``dof``; normal when
    None), the two-sided p-value of "no difference", how it was made and why it is not calibrated (empty if it is)."""

    d: float
    se: float | None
    dof: int | float | None
    p: float
    method: str
    flag: str = ""

    @property
    def ratio(self) -> float:
        """mu_a / mu_b."""
        return 10.0**self.d

    def bounds(self, prob: float = 0.95) -> tuple[float, float]:
        """The central ``prob`` interval of d (decades); the whole line where it has no law."""
        if self.se is None:
            return -math.inf, math.inf
        q = stats.norm.ppf(0.5 + prob / 2) if self.dof is None else stats.t.ppf(0.5 + prob / 2, self.dof)
        return self.d - q * self.se, self.d + q * self.se


def _log10_law(fit: FitResult) -> tuple[float, dict[str, float], float | None]:
    """(log10 mu, log10 of each jackknife refit by left-out seed, standard error of log10 mu from the interval)."""
    centre = math.log10(fit.mu)
    reps = fit.jackknife_mu or {}
    if fit.axis != "log10":
        reps = {k: math.log10(v) for k, v in reps.items() if v > 0} if all(v > 0 for v in reps.values()) else {}
    se = fit.interval_se
    if se is not None and fit.axis != "log10":
        se = se / (fit.mu * math.log(10.0))
    return centre, dict(reps), se


def _p_value(t: float, dof: float | None) -> float:
    return float(2 * (stats.norm.sf(abs(t)) if dof is None else stats.t.sf(abs(t), dof)))


def _jackknife_se(values: np.ndarray) -> float:
    n = values.size
    return math.sqrt((n - 1) / n * float(np.sum((values - values.mean()) ** 2)))


def difference(a: FitResult, b: FitResult) -> Difference | None:
    """log10 mu_a - log10 mu_b with its error and test (module docstring); None unless both fits converged."""
    if not (a.converged and b.converged and a.mu and b.mu and a.mu > 0 and b.mu > 0):
        return None
    la, ra, sa = _log10_law(a)
    lb, rb, sb = _log10_law(b)
    d = la - lb
    flags = sorted({f for f in (a.error_flag, b.error_flag) if f})
    if FLAG_BRACKET in flags:
        lo_a, hi_a = math.log10(a.mu_lo95), math.log10(a.mu_hi95)
        lo_b, hi_b = math.log10(b.mu_lo95), math.log10(b.mu_hi95)
        apart = hi_a < lo_b or hi_b < lo_a
        return Difference(d, None, None, 0.0 if apart else 1.0,
                          "bracket: differs only where the 95 % intervals do not overlap", FLAG_BRACKET)
    flag = "; ".join(flags)
    if ra and rb and set(ra) == set(rb) and len(ra) >= 2:
        keys = sorted(ra)
        se = _jackknife_se(np.array([ra[k] - rb[k] for k in keys]))
        dof = len(keys) - 1
        how = f"paired seed jackknife ({len(keys)} seeds), Student t with {dof} dof"
        if dof == 1:
            flag = FLAG_TWO_SEEDS
    elif ra and rb:
        va, vb = _jackknife_se(np.array(list(ra.values()))) ** 2, _jackknife_se(np.array(list(rb.values()))) ** 2
        se = math.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va**2 / (len(ra) - 1) + vb**2 / (len(rb) - 1)) if va + vb > 0 else None
        how = "seed jackknives of different seeds in quadrature, Welch-Satterthwaite dof"
    else:
        if sa is None or sb is None:
            return None
        se, dof = math.hypot(sa, sb), None
        how = "quoted errors in quadrature, normal"
        flag = flag or "no seed jackknife: not calibrated"
    if not se > 0:
        return Difference(d, se, dof, 0.0 if d != 0 else 1.0, how, flag)
    return Difference(d, se, dof, _p_value(d / se, dof), how, flag)


def versus_value(fit: FitResult, value: float) -> Difference | None:
    """log10 mu - log10 ``value`` for a value without error (e.g. the paper's mu), with the fit's law."""
    if not (fit.converged and fit.mu and fit.mu > 0 and value > 0):
        return None
    centre, _reps, se = _log10_law(fit)
    d = centre - math.log10(value)
    if fit.error_flag == FLAG_BRACKET:
        inside = fit.mu_lo95 <= value <= fit.mu_hi95
        return Difference(d, None, None, 1.0 if inside else 0.0, "bracket: the value inside it or not", FLAG_BRACKET)
    if se is None or not se > 0:
        return None
    return Difference(d, se, fit.interval_dof, _p_value(d / se, fit.interval_dof), fit.interval_method,
                      fit.error_flag)


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (familywise error rate): reject where ``adjusted <= alpha``."""
    p = np.asarray(p, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def letters(n: int, different: Iterable[tuple[int, int]], order: Sequence[float] | None = None) -> list[str]:
    """A compact letter display of ``n`` items: items that share a letter are not significantly different, items
    in ``different`` (pairs of indices) share none (Piepho 2004, insert-absorb). Letters are given in the order of
    ``order`` (e.g. mu: "a" is the group of the smallest), then a-z, A-Z, then ``a1``, ``b1``, ..."""
    columns: list[frozenset[int]] = [frozenset(range(n))]
    for i, j in different:
        split = []
        for col in columns:
            if i in col and j in col:
                split += [col - {j}, col - {i}]
            else:
                split.append(col)
        columns = _absorb(split)
    rank = list(order) if order is not None else list(range(n))
    columns.sort(key=lambda c: (min(rank[i] for i in c), sorted(rank[i] for i in c)))
    names = _names(len(columns))
    return ["".join(name for name, col in zip(names, columns) if i in col) for i in range(n)]


def _absorb(columns: list[frozenset[int]]) -> list[frozenset[int]]:
    """The columns that are no subset of another (each once)."""
    unique = sorted(set(columns), key=len, reverse=True)
    kept: list[frozenset[int]] = []
    for col in unique:
        if not any(col <= other for other in kept):
            kept.append(col)
    return kept


def _names(k: int) -> list[str]:
    base = string.ascii_lowercase + string.ascii_uppercase
    return [base[i % len(base)] + (str(i // len(base)) if i >= len(base) else "") for i in range(k)]
