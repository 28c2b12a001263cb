"""Which walking-noise midpoints differ: "is point i more sensitive than point j?", and the same for one setting
against another at a point (trained against inference-only, site against site).

One family per figure of Fig. 2: every pair of injection points of each curve, and every pair of curves at each
point. Each pair is a difference of log10 mu with a paired seed jackknife and a Student t test
(:func:`walking_noise.fit.compare.difference`); the p-values of the family are Holm-adjusted, so that the chance of
any false "differs" in a figure is at most 5 %. The points of a curve are summed up by letters (a compact letter
display): points that share a letter cannot be told apart. Written by :func:`walking_noise.report.walking.
fig2_walking_mu` as ``fig2_walking_differences_<kind>.csv`` (every pair) and ``.md`` (letters and the pairs of
curves; the pairs of points where there are few).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.fit import FitResult
from walking_noise.fit.compare import ALPHA, Difference, difference, holm, letters
from walking_noise.report.common import Series, markdown_table

#: The Markdown page lists every pair of points of a figure up to this many pairs (all are in the CSV).
MAX_POINT_PAIRS_SHOWN = 60


@dataclass
class FigureDifferences:
    """The tests of one figure: every pair (a table row each) and the letters of every series of the figure."""

    pairs: pd.DataFrame
    letters: dict[int, str]  # index of a series in the figure's group -> its letters among its curve's points
    alike: list[tuple[int, int]]  # series (indices in the group) of two curves at one point that cannot be told apart


def _row(kind: str, a_label: str, b_label: str, fa: FitResult, fb: FitResult, diff: Difference) -> dict[str, Any]:
    lo, hi = diff.bounds(0.95)
    return {"comparison": kind, "a": a_label, "b": b_label, "mu_a": fa.mu, "mu_b": fb.mu, "ratio": diff.ratio,
            "d_log10": diff.d, "se_log10": diff.se, "dof": diff.dof, "d_lo95": lo, "d_hi95": hi, "p": diff.p,
            "method": diff.method, "flag": diff.flag}


def figure_differences(group: Sequence[Series], fits: Sequence[FitResult], point: Callable[[Series], int],
                       curve: Callable[[Series], Any], label: Callable[[Any], str]) -> FigureDifferences:
    """The pairs of one figure: ``group[i]`` is fitted by ``fits[i]``, sits at injection point ``point(s)`` on the
    curve ``curve(s)`` (named by ``label(curve)``). Pairs without two converged fits are left out."""
    rows, index_pairs = [], []
    curves = sorted({curve(s) for s in group}, key=str)
    by_curve = {c: sorted((i for i, s in enumerate(group) if curve(s) == c), key=lambda i: point(group[i]))
                for c in curves}
    for c, members in by_curve.items():
        for x, i in enumerate(members):
            for j in members[x + 1:]:
                diff = difference(fits[i], fits[j])
                if diff is not None:
                    rows.append(_row("points", f"{label(c)}: point {point(group[i])}",
                                     f"{label(c)}: point {point(group[j])}", fits[i], fits[j], diff))
                    index_pairs.append((i, j))
    for x, c in enumerate(curves):
        for other in curves[x + 1:]:
            if isinstance(c, tuple) and not any(u == v for u, v in zip(c, other)):
                continue  # two curves that differ in every respect (role and site): no question anyone asks
            at = {point(group[i]): i for i in by_curve[other]}
            for i in by_curve[c]:
                j = at.get(point(group[i]))
                diff = difference(fits[i], fits[j]) if j is not None else None
                if diff is not None:
                    rows.append(_row("curves", f"point {point(group[i])}: {label(c)}",
                                     f"point {point(group[i])}: {label(other)}", fits[i], fits[j], diff))
                    index_pairs.append((i, j))
    pairs = pd.DataFrame(rows)
    if pairs.empty:
        return FigureDifferences(pairs, {}, [])
    pairs["p_holm"] = holm(pairs["p"].to_numpy())
    pairs["differs"] = pairs["p_holm"] <= ALPHA
    alike = [ij for ij, kind, differs in zip(index_pairs, pairs["comparison"], pairs["differs"])
             if kind == "curves" and not differs]
    found: dict[int, str] = {}
    for c, members in by_curve.items():
        fitted = [i for i in members if fits[i].converged and fits[i].mu]
        local = {i: k for k, i in enumerate(fitted)}
        apart = [(local[i], local[j]) for (i, j), differs in zip(index_pairs, pairs["differs"])
                 if differs and i in local and j in local]
        for i, text in zip(fitted, letters(len(fitted), apart, order=[fits[i].mu for i in fitted])):
            found[i] = text
    return FigureDifferences(pairs, found, alike)


def differences_markdown(title: str, result: FigureDifferences, group: Sequence[Series],
                         point: Callable[[Series], int], curve: Callable[[Series], Any],
                         label: Callable[[Any], str]) -> list[str]:
    """The Markdown section of one figure: letters per point and curve, the pairs of curves, the pairs of points."""
    lines = [f"## {title}", ""]
    pairs = result.pairs
    if pairs.empty:
        return lines + ["No pair with two converged fits.", ""]
    curves = sorted({curve(s) for s in group}, key=str)
    points = sorted({point(s) for s in group})
    cell = {(point(s), curve(s)): result.letters.get(i, "") for i, s in enumerate(group)}
    lines += ["Letters: the points of one curve that share a letter cannot be told apart (Holm over the "
              f"{len(pairs)} pairs of this figure, 5 %); 'a' is the group of the smallest mu (most sensitive).", "",
              markdown_table(["point", *[label(c) for c in curves]],
                             [[p, *[cell.get((p, c), "") for c in curves]] for p in points]), ""]
    for kind, what in (("curves", "Curves against each other at each point"), ("points", "Points of one curve")):
        part = pairs[pairs["comparison"] == kind]
        if part.empty:
            continue
        if kind == "points" and len(part) > MAX_POINT_PAIRS_SHOWN:
            lines += [f"{what}: {len(part)} pairs, in the CSV.", ""]
            continue
        lines += [f"{what} (d = log10 mu_a - log10 mu_b, its 95 % interval; p after Holm):", "",
                  markdown_table(["a", "b", "mu_a / mu_b", "d (decades)", "95 % of d", "p (Holm)", "differs", "note"],
                                 [_pair_cells(r) for r in part.to_dict("records")]), ""]
    return lines


def _pair_cells(r: dict[str, Any]) -> list[Any]:
    interval = (f"{r['d_lo95']:+.3f} .. {r['d_hi95']:+.3f}" if np.isfinite(r["d_lo95"]) and np.isfinite(r["d_hi95"])
                else "")
    return [r["a"], r["b"], f"{r['ratio']:.3g}", f"{r['d_log10']:+.3f}", interval, f"{r['p_holm']:.2g}",
            "yes" if r["differs"] else "no", r["flag"]]


__all__ = ["FigureDifferences", "differences_markdown", "figure_differences"]
