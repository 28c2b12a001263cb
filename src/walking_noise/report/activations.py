"""Fig. 4: self-binarization of activations under multiplicative walking noise (paper section VI.A-B).

The only part of the report that runs a model: it *evaluates* two saved checkpoints (never trains). A model trained
with strong multiplicative noise at one injection point and an equivalent clean model are run on validation data;
forward hooks on every :class:`~walking_noise.noise.NoiseInjection` module record the activations after each
layer (after the noise, where noise is injected). The noisy model runs with its noise on, as on the noisy device;
the clean model without noise.

Quantization probe. At one point at a time the activations are replaced by 2 or 3 levels and the accuracy is
measured:

- threshold t: Otsu's threshold of log10|a| over the non-zero activations of that point (the cut that best
  separates the near-zero cluster from the large one on a log scale, where the bimodality of Fig. 4 is visible;
  exact zeros, e.g. after a ReLU, stay zero). It is computed per point and per model from the recorded sample;
- 2 levels: a -> 0 where a <= t, else the mean of the recorded a > t (zero and one positive cluster: the
  learned binary code);
- 3 levels: a -> 0 where |a| <= t, the mean of a > t above, the mean of a < -t below (the noise acts symmetrically,
  so after it the code is ternary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from walking_noise.report.common import (
    markdown_table,
    new_figure,
    plain_log_ticks,
    save_figure,
    write_csv,
    write_text,
)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the cut maximising the between-class variance of the two sides."""
    values = values[np.isfinite(values)]
    if values.size < 2 or values.min() == values.max():
        return float(values.min()) if values.size else 0.0
    hist, edges = np.histogram(values, bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    with np.errstate(divide="ignore", invalid="ignore"):
        m0, m1 = s0 / w0, (s0[-1] - s0) / w1
        between = w0 * w1 * (m0 - m1) ** 2
    between[~np.isfinite(between)] = -1
    return float(edges[int(np.argmax(between)) + 1])


def quantization_levels(a: np.ndarray) -> dict[str, float]:
    """Threshold t and the cluster means of one point's recorded activations (see the module docstring)."""
    flat = a.ravel().astype(np.float64)
    nonzero = np.abs(flat[(flat != 0) & np.isfinite(flat)])
    t = 10 ** otsu_threshold(np.log10(nonzero)) if nonzero.size >= 2 else 0.0
    pos, neg = flat[flat > t], flat[flat < -t]
    return {"threshold": float(t), "positive_mean": float(pos.mean()) if pos.size else 0.0,
            "negative_mean": float(neg.mean()) if neg.size else 0.0,
            "zero_fraction": float(np.mean(np.abs(flat) <= t))}


def quantize(a: torch.Tensor, levels: dict[str, float], n_levels: int) -> torch.Tensor:
    """``a`` replaced by 2 or 3 levels: 0, the positive cluster mean and (3 levels) the negative cluster mean."""
    t = levels["threshold"]
    out = torch.zeros_like(a)
    out = torch.where(a > t, torch.full_like(a, levels["positive_mean"]), out)
    if n_levels == 3:
        out = torch.where(a < -t, torch.full_like(a, levels["negative_mean"]), out)
    return out


@torch.no_grad()
def record_activations(model: Any, x: torch.Tensor, seed: int = 0) -> dict[int, np.ndarray]:
    """The output of every injection point for inputs ``x`` (eval mode, noise as configured), via forward hooks."""
    seen: dict[int, np.ndarray] = {}
    hooks = [p.injection.register_forward_hook(
        lambda _m, _i, out, i=p.index: seen.__setitem__(i, out.detach().cpu().numpy().ravel()))
        for p in model.injection_points]
    try:
        model.eval()
        torch.manual_seed(seed)
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def accuracy_with_quantization(model: Any, x: torch.Tensor, y: torch.Tensor, point: int | None,
                               levels: dict[str, float] | None, n_levels: int, seed: int = 0) -> float:
    """Accuracy (fraction) with point ``point``'s output quantized (``point=None``: no quantization)."""
    from walking_noise.training import evaluate

    hook = None
    if point is not None and levels is not None:
        module = model.injection_points[point].injection
        hook = module.register_forward_hook(lambda _m, _i, out: quantize(out, levels, n_levels))
    try:
        torch.manual_seed(seed)
        return evaluate(model, x, y)[0]
    finally:
        if hook is not None:
            hook.remove()


def _load(path: str | Path, data: Any, noisy: bool) -> tuple[Any, Any]:
    from walking_noise.noise import NoiseConfig, configure_noise
    from walking_noise.training import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (runs save one when their config sets "
                                f"`checkpoint: PATH`)")
    model, cfg = load_checkpoint(path, data)
    configure_noise(model, cfg.noise if noisy else NoiseConfig())
    return model, cfg


def fig4_self_binarization(noisy_checkpoint: str | Path, clean_checkpoint: str | Path, data: Any = None,
                           injection_layer: int | None = None, out_dir: str | Path = ".", *,
                           max_samples: int = 1000, seed: int = 0) -> list[Path]:
    """Fig. 4: activation histograms per injection point (noisy-trained vs clean) and the quantization probe.

    ``data``: a :class:`~walking_noise.data.DatasetSplits` (None: the noisy run's own dataset, loaded from its
    config); its test split is used. ``injection_layer``: the point whose noise the noisy model was trained with
    (None: taken from the noisy checkpoint's config). Histograms use the first ``max_samples`` test inputs and are
    density-normalised (count / (total * bin width)), so bins of different width on the log axis compare.
    Writes ``fig4_self_binarization.png`` (histograms, linear and log |a| axes), ``fig4_quantization.png``
    (accuracy with each point quantized to 2 or 3 levels), ``fig4_quantization.csv`` and ``.md``.
    """
    from walking_noise.training import load_run_dataset

    out_dir = Path(out_dir)
    noisy, noisy_cfg = _load(noisy_checkpoint, data, noisy=True)
    if data is None:
        data = load_run_dataset(noisy_cfg)
    clean, _ = _load(clean_checkpoint, data, noisy=False)
    if injection_layer is None:
        injection_layer = noisy_cfg.noise.injection_layer
    points = noisy.injection_points
    if len(clean.injection_points) != len(points):
        raise ValueError(f"the checkpoints are of different architectures ({len(points)} vs "
                         f"{len(clean.injection_points)} injection points); Fig. 4 compares equivalent models")
    x, y = data.test_x.cpu(), data.test_y.cpu()
    sample = x[:max_samples]
    acts = {"noisy": record_activations(noisy, sample, seed), "clean": record_activations(clean, sample, seed)}
    models = {"noisy": noisy, "clean": clean}

    rows = []
    base = {name: accuracy_with_quantization(m, x, y, None, None, 2, seed) for name, m in models.items()}
    for p in points:
        row: dict[str, Any] = {"point": p.label, "index": p.index, "injected": p.index == injection_layer}
        for name, model in models.items():
            levels = quantization_levels(acts[name][p.index])
            row.update({f"{name}_{k}": v for k, v in levels.items()})
            row[f"{name}_accuracy"] = base[name]
            for n in (2, 3):
                row[f"{name}_accuracy_{n}_levels"] = accuracy_with_quantization(model, x, y, p.index, levels, n, seed)
        rows.append(row)
    table = pd.DataFrame(rows)
    noise = noisy_cfg.noise
    what = f"{noise.kind} noise s = {noise.noise_std:g} at point {injection_layer}"
    paths = [_histograms(points, acts, injection_layer, table, what, out_dir / "fig4_self_binarization.png"),
             _probe_plot(table, base, injection_layer, what, out_dir / "fig4_quantization.png"),
             write_csv(table, out_dir / "fig4_quantization.csv")]
    md = ["# Fig. 4: quantization probe", "",
          f"Noisy model: {what} ({Path(noisy_checkpoint).name}); clean model: {Path(clean_checkpoint).name}. "
          f"Accuracy (%) with one point's activations replaced by 2 or 3 levels; threshold = Otsu on log10|a|.", "",
          markdown_table(["point", "noisy: none", "noisy: 2 levels", "noisy: 3 levels", "clean: none",
                          "clean: 2 levels", "clean: 3 levels", "threshold (noisy)"],
                         [[r["point"] + (" (noise)" if r["injected"] else ""),
                           *[f"{100 * r[c]:.1f}" for c in ("noisy_accuracy", "noisy_accuracy_2_levels",
                                                            "noisy_accuracy_3_levels", "clean_accuracy",
                                                            "clean_accuracy_2_levels", "clean_accuracy_3_levels")],
                           f"{r['noisy_threshold']:.3g}"] for r in rows])]
    paths.append(write_text("\n".join(md), out_dir / "fig4_quantization.md"))
    return paths


def _histograms(points: list, acts: dict[str, dict[int, np.ndarray]], injected: int | None, table: pd.DataFrame,
                what: str, path: Path) -> Path:
    from matplotlib.ticker import FuncFormatter

    n = len(points)
    fig = new_figure(9.0, 1.35 * n + 0.8)
    axes = fig.subplots(n, 2, squeeze=False)
    colors = {"clean": "tab:blue", "noisy": "tab:orange"}
    for row, p in enumerate(points):
        both = np.concatenate([acts[m][p.index] for m in acts])
        both = both[np.isfinite(both)]
        lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        mags = np.abs(both[both != 0])
        log_bins = (np.logspace(np.log10(mags.min()), np.log10(mags.max()) + 1e-9, 60)
                    if mags.size and mags.max() > mags.min() else None)
        for name in ("clean", "noisy"):
            a = acts[name][p.index]
            a = a[np.isfinite(a)]
            zeros = float(np.mean(a == 0)) if a.size else 0.0
            axes[row, 0].hist(a, bins=np.linspace(lo, hi, 60), density=True, histtype="stepfilled", alpha=0.5,
                              color=colors[name], label=f"{name} (zeros {100 * zeros:.0f}%)")
            if log_bins is not None and np.any(a != 0):
                axes[row, 1].hist(np.abs(a[a != 0]), bins=log_bins, density=True, histtype="stepfilled",
                                  alpha=0.5, color=colors[name])
        t = float(table.loc[table["index"] == p.index, "noisy_threshold"].iloc[0])
        if t > 0:
            axes[row, 1].axvline(t, color="tab:red", ls="--", lw=0.8)
        axes[row, 1].set_xscale("log")
        axes[row, 1].set_yscale("log")
        plain_log_ticks(axes[row, 1].yaxis, minor=False)
        mark = " (noise injected here)" if p.index == injected else ""
        axes[row, 0].text(0.02, 0.92, p.label + mark, transform=axes[row, 0].transAxes, va="top", fontsize=7,
                          fontweight="bold", color="tab:red" if mark else "black")
        axes[row, 0].legend(fontsize=5, loc="upper right")
        plain = FuncFormatter(lambda v, _: f"{v:.3g}")  # no offset text (1e9, 1e-8) to collide between rows
        axes[row, 0].xaxis.set_major_formatter(plain)
        axes[row, 0].yaxis.set_major_formatter(plain)
        for ax in axes[row]:
            ax.tick_params(labelsize=6)
    axes[0, 0].set_title("activation a (linear axis), density", fontsize=8)
    axes[0, 1].set_title("|a| > 0 (log axes), density; red: 2/3-level threshold", fontsize=8)
    fig.suptitle(f"Fig. 4: activations per injection point, clean (blue) vs trained with {what} (orange)",
                 fontsize=9)
    return save_figure(fig, path)


def _probe_plot(table: pd.DataFrame, base: dict[str, float], injected: int | None, what: str, path: Path) -> Path:
    fig = new_figure(7.5, 4.4)
    ax = fig.subplots()
    x = table["index"].to_numpy()
    for name, color in (("noisy", "tab:orange"), ("clean", "tab:blue")):
        ax.axhline(100 * base[name], color=color, lw=0.8, ls=":", label=f"{name}, no quantization")
        ax.plot(x, 100 * table[f"{name}_accuracy_2_levels"], "o-", color=color, label=f"{name}, 2 levels")
        ax.plot(x, 100 * table[f"{name}_accuracy_3_levels"], "s--", mfc="none", color=color,
                label=f"{name}, 3 levels")
    if injected is not None:
        ax.axvline(injected, color="tab:red", lw=6, alpha=0.15, label="noise injection point")
    ax.set_xticks(x)
    ax.set_xticklabels(table["point"], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xlabel("quantized point (index name)")
    ax.set_title(f"Quantization probe: one point's activations replaced by 2 or 3 levels\n(noisy model: {what})",
                 fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
