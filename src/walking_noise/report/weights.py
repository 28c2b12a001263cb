"""Table II of the paper (section V): the mean weight magnitude of a learnable layer, unclamped / clamped, trained
with additive walking noise at its output, at the noise level closest to the unclamped series' midpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from walking_noise.report.common import (
    NOISE_STD, NotEnoughRuns, Series, column, dataset_name, display, fit_series, half_drop_level, layer_labels,
    learnable_points, markdown_table, model_name, reported_error, short_name, sort_key, varying, write_csv,
    write_text,
)
from walking_noise.report.walking import WITHIN_FIGURE, walking_series


def _closest_level(levels: list[float], mu: float, axis: str) -> float:
    if axis == "log10" and mu > 0 and any(v > 0 for v in levels):
        positive = [v for v in levels if v > 0]
        return min(positive, key=lambda v: abs(np.log10(v) - np.log10(mu)))
    return min(levels, key=lambda v: abs(v - mu))


def _mean_magnitude(runs: pd.DataFrame, level: float, label: str) -> tuple[float, int]:
    values = [m[label] for m, x in zip(column(runs, "weight_magnitudes"), runs[NOISE_STD])
              if x == level and isinstance(m, dict) and label in m]
    return (float(np.mean(values)), len(values)) if values else (np.nan, 0)


def table2_weight_ratio(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Table II: mean |w| of each learnable layer, unclamped / clamped, at the noise level closest to mu.

    For every learnable layer (conv/FC) with additive walking noise injected at its output and trained with noise,
    mu is fitted on the unclamped series (if that fit does not converge: the tested level whose accuracy is
    closest to half-way between the highest and lowest, noted in ``mu_source``). Among the levels run both clamped
    and unclamped, the one closest to mu (in log10 for a log-spaced grid) is used; the ratio is the mean over seeds
    of ``weight_magnitudes[layer]`` of the unclamped runs divided by that of the clamped runs. Writes
    ``table2_weight_ratio.md`` (the paper's layout) and ``table2_weight_ratio.csv``.
    """
    out_dir = Path(out_dir)
    series = [s for s in walking_series(df, "additive") if s.key.get("noise.phase") != "inference"]
    other = [c for c in varying(series) if c not in WITHIN_FIGURE and c not in ("dataset", "model", "batchnorm")]
    pairs: dict[tuple, dict[bool, Series]] = {}
    for s in series:
        k = tuple(repr(s.key.get(c)) for c in ["dataset", "model", "batchnorm", *other, "noise.injection_layer"])
        pairs.setdefault(k, {})[bool(s.key.get("weight_clamping"))] = s
    rows = []
    for found in pairs.values():
        if False not in found or True not in found:
            continue
        free, clamped = found[False], found[True]
        point = int(free.key["noise.injection_layer"])
        learnable = learnable_points(free.runs)
        if point not in learnable:
            continue
        label = layer_labels(free.runs).get(point, str(point))
        fit = fit_series(free)
        if fit.converged:
            mu, source = fit.mu, "fit of the unclamped series"
        else:
            mu = half_drop_level(free)
            source = f"half-drop level (unclamped fit not converged: {fit.reason})"
        common = sorted(set(free.levels) & set(clamped.levels))
        if mu is None or not common:
            continue
        level = _closest_level(common, mu, fit.axis)
        w_free, n_free = _mean_magnitude(free.runs, level, label)
        w_clamped, n_clamped = _mean_magnitude(clamped.runs, level, label)
        ordinal, layer_type = learnable[point]
        rows.append({**{c: free.key.get(c) for c in ["dataset", "model", "batchnorm", *other]},
                     "injection_layer": point, "layer": label, "layer_id": ordinal, "layer_type": layer_type,
                     "mu": mu, "mu_err": reported_error(fit) if fit.converged else None, "mu_source": source,
                     "noise_std": level, "mean_abs_w_unclamped": w_free, "mean_abs_w_clamped": w_clamped,
                     "n_unclamped": n_free, "n_clamped": n_clamped,
                     "ratio": w_free / w_clamped if w_clamped and np.isfinite(w_clamped) else np.nan})
    if not rows:
        raise NotEnoughRuns("Table II: needs walking additive runs trained with noise, with and without weight "
                            "clamping, at the same learnable (conv/FC) injection point and noise level, with stored "
                            "weight magnitudes")
    table = pd.DataFrame(rows).sort_values(["dataset", "model", *other, "batchnorm", "layer_id"], key=lambda c: c.map(
        sort_key) if c.dtype == object else c, ignore_index=True)
    lines = ["# Table II: weight magnitude ratio between unclamped and clamped weights", "",
             "Mean |w| of the layer at the walking injection point, unclamped / clamped (w in [-1, 1]), trained with "
             "additive noise at that point, at the tested noise level closest to the unclamped series' mu; mean over "
             "seeds. Levels and sources in `table2_weight_ratio.csv`.", ""]
    for key, sub in table.groupby(["dataset", "model", *other], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        lines += [f"## {model_name(key[1])} on {dataset_name(key[0])}"
                  + "".join(f", {short_name(c)} = {display(v)}" for c, v in zip(other, key[2:])), ""]
        ids = sorted(set(sub["layer_id"]))
        types = {i: sub[sub["layer_id"] == i]["layer_type"].iloc[0] for i in ids}
        body = [["Layer Type", *[types[i] for i in ids]]]
        for bn, name in ((True, "with BatchNorm"), (False, "without BatchNorm")):
            part = sub[sub["batchnorm"].astype(bool) == bn]
            if part.empty:
                continue
            cells = []
            for i in ids:
                r = part[part["layer_id"] == i]
                cells.append(f"{r['ratio'].iloc[0]:.2g}" if len(r) and np.isfinite(r["ratio"].iloc[0]) else "")
            body.append([name, *cells])
        lines.append(markdown_table(["Layer ID", *[str(i) for i in ids]], body))
    return [write_text("\n".join(lines) + "\n", out_dir / "table2_weight_ratio.md"),
            write_csv(table, out_dir / "table2_weight_ratio.csv")]


__all__ = ["table2_weight_ratio"]
