"""Coverage of the errors of mu: simulated campaigns with a known midpoint, one row per method of error.

    PYTHONPATH=src .venv/bin/python benchmarks/fit_coverage.py [--campaigns 200] [--designs NAME ...]
        [--bootstrap 3s] [--psignifit] [--out results/fit_coverage]

Each design (:class:`walking_noise.fit.simulate.Design`) simulates campaigns whose population midpoint mu is known:
Eq. 1 plus a seed random effect (in mu and in the clean plateau, shared by a seed's levels) plus binomial test-set
noise (n = 5,000 or 10,000); 2, 3, 5 and 10 seeds; 6 to 20 levels; linear and log axes; a partial drop (a_min above
chance); unequal seeds (fewer on the plateaus, as an adaptive search measures them); a drop sharper than the level
spacing. Every campaign is fitted once with :func:`walking_noise.fit.fit_midpoint` (seeds given), and each method
turns that fit into an interval on the fit axis (log10 mu or mu):

* ``before: max(cov, jackknife), normal``: the report's error before issue 27 (the larger of the chi2-scaled
  covariance error and the seed jackknife, the jackknife from 3 seeds), +-1 and +-1.96 of it;
* ``covariance, chi2-scaled, normal`` and ``covariance, unscaled, normal``: the fit's covariance alone;
* ``jackknife, normal`` and ``jackknife, t(n-1)``: the leave-one-seed-out jackknife, normal or Student t quantiles;
* ``quoted (default)``: what the library quotes now (``FitResult.mu_lo68`` ...): the jackknife with t, the bracket
  where no level lies on the slope, the covariance where there are no seeds;
* ``seed bootstrap, percentile`` (``--bootstrap N``, on the first N campaigns; all multisets of 3 seeds with their
  weights, else 50 draws);
* ``psignifit 4, beta-binomial`` (``--psignifit N``, on the first N campaigns, where it imports; 10-200 s a fit):
  the counts accuracy x n_test pooled over seeds per level, its 68/95 % credible intervals of the threshold
  (:mod:`walking_noise.fit.crosscheck`); its pull reads the 95 % interval as normal.

Printed per design and method: the coverage of the nominal 68 % and 95 % intervals (with the binomial standard error
of the 95 % one), the rms of the pulls z = Phi^-1(F((mu_hat - mu) / se)) with F the method's law (Student t or
normal): N(0, 1) when calibrated, so rms 1; for reference the rms of the plain (mu_hat - mu) / se, which for a t law
of 2 dof has no finite rms; and the median 95 % width on the fit axis. Brackets have no pull. The target (issue 27):
95 % coverage 93-97 % and pull rms 0.9-1.1 on every design with >= 3 seeds. Writes ``coverage.md`` and
``coverage.csv`` under ``--out`` (``--name``: another file name).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from walking_noise.fit import FitResult, fit_midpoint
from walking_noise.fit.errors import LEVELS, pull
from walking_noise.fit.simulate import Design, simulate

def _lin(n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.linspace(0.0, 2.0, n))


def _log(n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.logspace(-1, 1, n))


#: mu = 0.9 and |sigma| = 0.12 on a linear axis 0..2 (the MNIST MLP's multiplicative cells); mu = 1.6 and |sigma| =
#: 0.15 decades on a log axis 0.1..10 (its additive cells). "seed": the seeds scatter mu by 0.3 |sigma| and the clean
#: plateau by 1 point (the seed effect dominates); "test": by 0.02 |sigma| and 0.2 points (test-set noise dominates).
SEED = dict(lin=dict(tau_mu=0.036, tau_amax=0.01), log=dict(tau_mu=0.045, tau_amax=0.01))
TEST = dict(lin=dict(tau_mu=0.0024, tau_amax=0.002), log=dict(tau_mu=0.003, tau_amax=0.002))


def _design(name: str, axis: str, n_levels: int, n_seeds: int, regime: dict, **kw) -> Design:
    levels = _lin(n_levels) if axis == "linear" else _log(n_levels)
    base = dict(mu=0.9, sigma=-0.12) if axis == "linear" else dict(mu=1.6, sigma=-0.15)
    return Design(name, levels, axis=axis, n_seeds=n_seeds, **{**base, **regime["lin" if axis == "linear" else "log"],
                                                                 **kw})


DESIGNS = [
    _design("lin 8 levels, 3 seeds", "linear", 8, 3, SEED),
    _design("lin 8 levels, 5 seeds", "linear", 8, 5, SEED),
    _design("lin 8 levels, 10 seeds", "linear", 8, 10, SEED),
    _design("lin 6 levels, 3 seeds", "linear", 6, 3, SEED),
    _design("lin 20 levels, 3 seeds", "linear", 20, 3, SEED),
    _design("lin 12 levels, 5 seeds, n=5000", "linear", 12, 5, SEED, n_test=5000),
    _design("lin 8 levels, 3 seeds, test-set noise", "linear", 8, 3, TEST),
    _design("lin 12 levels, 5 seeds, test-set noise, n=5000", "linear", 12, 5, TEST, n_test=5000),
    _design("lin 8 levels, 3 seeds, partial drop (a_min 0.5)", "linear", 8, 3, SEED, a_min=0.5),
    _design("log 8 levels, 3 seeds", "log10", 8, 3, SEED),
    _design("log 6 levels, 5 seeds, n=5000", "log10", 6, 5, SEED, n_test=5000),
    _design("log 20 levels, 10 seeds", "log10", 20, 10, SEED),
    _design("log 12 levels, 3 seeds, test-set noise", "log10", 12, 3, TEST),
    _design("log 8 levels, 5 seeds on the slope, 3 on plateaus", "log10", 8, 5, SEED, plateau_seeds=3),
    _design("lin 8 levels, 2 seeds", "linear", 8, 2, SEED),
    _design("lin 8 levels, 3 seeds, drop sharper than the spacing", "linear", 8, 3, SEED, sigma=-0.01,
            tau_mu=0.003),
]

#: The "68 %" interval: one standard deviation of a normal law (as the library's, ``walking_noise.fit.errors``).
ONE_SIGMA = LEVELS["68"]
#: A method's law of mu on the fit axis: ("t", centre, se, dof) with dof None for normal, ("bracket", lo, hi),
#: ("sample", values, weights) for a bootstrap distribution, or ("intervals", centre, lo68, hi68, lo95, hi95); None
#: when it has none for this fit.
Law = tuple
Method = Callable[[FitResult, Design, np.ndarray, np.ndarray, np.ndarray], "Law | None"]


def _axis_errors(fit: FitResult) -> tuple[float, float | None, float | None, float | None]:
    """(mu, chi2-scaled covariance error, unscaled error, jackknife error) on the fit axis."""
    if fit.axis == "log10":
        unscaled = fit.params.get("log10_mu_err_unscaled")
        return fit.log10_mu, fit.log10_mu_err, unscaled, fit.log10_mu_err_jackknife
    return fit.mu, fit.mu_err, fit.mu_err_unscaled, fit.mu_err_jackknife


def _before(fit, design, *_):
    mu, cov, _u, jack = _axis_errors(fit)
    jack = jack if fit.params.get("jackknife_n_seeds", 0) >= 3 else None  # the jackknife needed 3 seeds then
    errs = [e for e in (cov, jack) if e is not None]
    return ("t", mu, max(errs), None) if errs else None


def _covariance(fit, *_):
    mu, cov, _u, _j = _axis_errors(fit)
    return ("t", mu, cov, None) if cov is not None else None


def _unscaled(fit, *_):
    mu, _c, unscaled, _j = _axis_errors(fit)
    return ("t", mu, unscaled, None) if unscaled is not None else None


def _jackknife(dof: bool) -> Method:
    def method(fit, design, *_):
        mu, _c, _u, jack = _axis_errors(fit)
        k = fit.params.get("jackknife_n_seeds", 0)
        return ("t", mu, jack, k - 1 if dof else None) if jack is not None and k >= 2 else None
    return method


def _quoted(fit, *_):
    if fit.error_flag == "bracketed between levels":
        pos = np.log10 if fit.axis == "log10" else float
        return ("bracket", float(pos(fit.mu_lo95)), float(pos(fit.mu_hi95)))
    mu = fit.log10_mu if fit.axis == "log10" else fit.mu
    return ("t", mu, fit.interval_se, fit.interval_dof) if fit.interval_se is not None else None


def _bootstrap(fit, design, x, y, seeds):
    """Seed bootstrap: refit on seeds drawn with replacement (each draw a new seed label); all multisets of <= 3
    seeds with their multinomial weights, else 50 random draws."""
    labels = np.unique(seeds)
    k = len(labels)
    if k < 2:
        return None
    if k <= 3:
        draws = list(itertools.combinations_with_replacement(range(k), k))
        weights = [math.factorial(k) / np.prod([math.factorial(d.count(i)) for i in set(d)]) for d in draws]
    else:
        rng = np.random.default_rng(hash(y.tobytes()) % 2**32)
        draws = [tuple(rng.integers(0, k, k)) for _ in range(50)]
        weights = [1.0] * len(draws)
    values, kept = [], []
    for d, wgt in zip(draws, weights):
        parts = [(x[seeds == labels[i]], y[seeds == labels[i]]) for i in d]
        xb = np.concatenate([p[0] for p in parts])
        yb = np.concatenate([p[1] for p in parts])
        r = fit_midpoint(xb, yb, axis=design.axis)
        if r.converged:
            values.append(r.log10_mu if design.axis == "log10" else r.mu)
            kept.append(wgt)
    return ("sample", np.array(values), np.array(kept)) if len(values) >= 2 else None


def _psignifit(fit, design, x, y, seeds):
    """psignifit 4 (beta-binomial, its default priors) on the counts pooled over seeds per level: its credible
    intervals of the threshold (half-way between its asymptotes), on the fit axis."""
    from walking_noise.fit.crosscheck import psignifit_midpoint

    found = psignifit_midpoint(x, y, design.n_test, design.axis)
    pos = np.log10 if design.axis == "log10" else float
    return ("intervals", float(pos(found["mu"])), *(float(pos(found[k])) for k in ("lo68", "hi68", "lo95", "hi95")))


BEFORE, QUOTED = "before: max(cov, jackknife), normal", "quoted (default)"
METHODS: dict[str, Method] = {
    BEFORE: _before,
    "covariance, chi2-scaled, normal": _covariance,
    "covariance, unscaled, normal": _unscaled,
    "jackknife, normal": _jackknife(False),
    "jackknife, t(n-1)": _jackknife(True),
    QUOTED: _quoted,
}


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = (np.cumsum(w) - 0.5 * w) / w.sum()
    return float(np.interp(q, cum, v))


def judge(law: Law, truth: float) -> dict[str, float]:
    """Coverage of the 68 % and 95 % intervals of ``law``, its pull and plain pull, and its 95 % width."""
    if law[0] == "bracket":
        lo, hi = law[1], law[2]
        inside = float(lo <= truth <= hi)
        return dict(in68=inside, in95=inside, z=np.nan, plain=np.nan, width95=hi - lo)
    if law[0] == "intervals":  # credible intervals without a law: the pull from the 95 % one read as normal
        centre, lo68, hi68, lo95, hi95 = law[1:]
        se = (hi95 - lo95) / (2 * stats.norm.ppf(0.975))
        return dict(in68=float(lo68 <= truth <= hi68), in95=float(lo95 <= truth <= hi95),
                    z=(centre - truth) / se if se > 0 else np.nan, plain=np.nan, width95=hi95 - lo95)
    if law[0] == "sample":
        values, weights = law[1], law[2]
        bounds = {p: (_weighted_quantile(values, weights, 0.5 - p / 2), _weighted_quantile(values, weights,
                                                                                          0.5 + p / 2))
                  for p in (ONE_SIGMA, 0.95)}
        below = float(np.sum(weights[values < truth]) + 0.5 * np.sum(weights[values == truth])) / weights.sum()
        z = float(stats.norm.ppf(np.clip(1 - below, 1e-6, 1 - 1e-6)))
        return dict(in68=float(bounds[ONE_SIGMA][0] <= truth <= bounds[ONE_SIGMA][1]),
                    in95=float(bounds[0.95][0] <= truth <= bounds[0.95][1]), z=z, plain=np.nan,
                    width95=bounds[0.95][1] - bounds[0.95][0])
    _, centre, se, dof = law
    if se is None or not se > 0:
        return dict(in68=float(centre == truth), in95=float(centre == truth), z=np.nan, plain=np.nan, width95=0.0)
    q = (lambda p: stats.norm.ppf(p)) if dof is None else (lambda p: stats.t.ppf(p, dof))
    plain = (centre - truth) / se
    cdf = stats.norm.cdf(plain) if dof is None else stats.t.cdf(plain, dof)
    return dict(in68=float(abs(plain) <= q(0.5 + ONE_SIGMA / 2)), in95=float(abs(plain) <= q(0.975)),
                z=float(stats.norm.ppf(np.clip(cdf, 1e-16, 1 - 1e-16))), plain=plain, width95=2 * q(0.975) * se)


def run_design(design: Design, campaigns: int, rng: np.random.Generator, methods: dict[str, Method],
               slow: dict[str, tuple[Method, int]]) -> tuple[pd.DataFrame, dict]:
    """Every campaign of ``design`` judged by every method (the ``slow`` ones on their first campaigns only)."""
    rows, failed, flags, seconds = [], 0, {}, 0.0
    for c in range(campaigns):
        x, y, seeds = simulate(design, rng)
        start = time.perf_counter()
        fit = fit_midpoint(x, y, seeds=seeds, axis=design.axis)
        seconds += time.perf_counter() - start
        if not fit.converged:
            failed += 1
            continue
        flags[fit.error_flag] = flags.get(fit.error_flag, 0) + 1
        assert fit.error_flag == "bracketed between levels" or pull(fit, design.mu) is not None or \
            fit.interval_se == 0
        todo = dict(methods)
        todo.update({name: m for name, (m, n) in slow.items() if c < n})
        for name, method in todo.items():
            law = method(fit, design, x, y, seeds)
            if law is None:
                continue
            rows.append(dict(design=design.name, method=name, campaign=c, **judge(law, design.position)))
    return pd.DataFrame(rows), dict(failed=failed, flags=flags, fit_seconds=seconds / max(campaigns, 1))


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    def rms(v: pd.Series) -> float:
        v = v.dropna()
        return float(np.sqrt(np.mean(v**2))) if len(v) else np.nan

    out = rows.groupby(["design", "method"], sort=False).agg(
        n=("in95", "size"), cover68=("in68", "mean"), cover95=("in95", "mean"), pull_rms=("z", rms),
        plain_rms=("plain", rms), width95=("width95", "median")).reset_index()
    out["cover95_se"] = np.sqrt(out["cover95"] * (1 - out["cover95"]) / out["n"])
    return out


def markdown(summary: pd.DataFrame, info: dict[str, dict], args: argparse.Namespace, seconds: float) -> str:
    lines = ["# Coverage of the errors of mu on simulated campaigns", "",
             f"`PYTHONPATH=src .venv/bin/python benchmarks/fit_coverage.py {' '.join(sys.argv[1:])}` "
             f"({args.campaigns} campaigns per design, simulation seed {args.seed}, {seconds:.0f} s).", "",
             "cover68 / cover95: share of campaigns whose nominal 68 % / 95 % interval holds the true mu (fit axis: "
             "log10 mu on log designs); ± its binomial standard error. pull rms: rms of z = Phi^-1(F((mu_hat - mu) / "
             "se)), F the method's law (t or normal), 1 when calibrated. plain rms: rms of (mu_hat - mu) / se, for "
             "reference (no finite value for a t law of 2 dof). width95: median 95 % width on the fit axis. "
             "Target: cover95 93-97 %, pull rms 0.9-1.1 on every design with >= 3 seeds and a level on the slope.", ""]
    lines += ["## Summary: the error quoted before and now", "",
              "| design | before: cover95 | before: pull rms | now: cover95 | now: pull rms | now: flag |",
              "|---|---|---|---|---|---|"]
    for design, part in summary.groupby("design", sort=False):
        by = part.set_index("method")
        cells = []
        for method in (BEFORE, QUOTED):
            r = by.loc[method]
            cells += [f"{100 * r['cover95']:.1f} ± {100 * r['cover95_se']:.1f} %",
                      f"{r['pull_rms']:.2f}" if np.isfinite(r["pull_rms"]) else "n/a (bracket)"]
        flags = ", ".join(f"{k}: {v}" for k, v in sorted(info[design]["flags"].items()) if k)
        lines.append(f"| {design} | {' | '.join(cells)} | {flags} |")
    lines.append("")
    for design, part in summary.groupby("design", sort=False):
        meta = info[design]
        flags = ", ".join(f"{k or 'calibrated'}: {v}" for k, v in sorted(meta["flags"].items()))
        lines += [f"## {design}", "", f"{meta['failed']} of {args.campaigns} fits did not converge; quoted "
                  f"intervals: {flags}; {1000 * meta['fit_seconds']:.0f} ms per fit with its jackknife.", "",
                  "| method | n | cover68 | cover95 | pull rms | plain rms | width95 |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            lines.append(f"| {r['method']} | {r['n']} | {100 * r['cover68']:.1f} % | {100 * r['cover95']:.1f} ± "
                         f"{100 * r['cover95_se']:.1f} % | {r['pull_rms']:.2f} | {r['plain_rms']:.2f} | "
                         f"{r['width95']:.3g} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=200, help="simulated campaigns per design")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation's random numbers")
    parser.add_argument("--designs", nargs="*", default=None, help="substrings of the design names to run")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="also the seed bootstrap, on the first N campaigns of each design")
    parser.add_argument("--psignifit", type=int, default=0, metavar="N",
                        help="also psignifit 4 (if it imports), on the first N campaigns of each design")
    parser.add_argument("--out", type=Path, default=None, help="write NAME.md and NAME.csv here")
    parser.add_argument("--name", default="coverage", help="file name of the outputs (default coverage)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    designs = [d for d in DESIGNS if not args.designs or any(s in d.name for s in args.designs)]
    slow: dict[str, tuple[Method, int]] = {}
    if args.bootstrap:
        slow["seed bootstrap, percentile"] = (_bootstrap, args.bootstrap)
    if args.psignifit:
        slow["psignifit 4, beta-binomial, pooled counts"] = (_psignifit, args.psignifit)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    frames, info = [], {}
    for design in designs:
        rows, info[design.name] = run_design(design, args.campaigns, rng, METHODS, slow)
        frames.append(rows)
        part = summarise(rows)
        print(f"\n{design.name}  ({info[design.name]['failed']} not converged, flags {info[design.name]['flags']}, "
              f"{1000 * info[design.name]['fit_seconds']:.0f} ms/fit)")
        for _, r in part.iterrows():
            print(f"  {r['method']:<45} n={r['n']:<4} 68%: {100 * r['cover68']:5.1f}  95%: {100 * r['cover95']:5.1f}"
                  f" ± {100 * r['cover95_se']:.1f}  pull rms {r['pull_rms']:.2f}  plain rms {r['plain_rms']:.2f}  "
                  f"width95 {r['width95']:.3g}", flush=True)
    seconds = time.perf_counter() - start
    summary = summarise(pd.concat(frames, ignore_index=True))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        summary.to_csv(args.out / f"{args.name}.csv", index=False)
        (args.out / f"{args.name}.md").write_text(markdown(summary, info, args, seconds))
        print(f"wrote {args.out / args.name}.md")


if __name__ == "__main__":
    main()
