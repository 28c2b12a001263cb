"""``write_report``: every table and figure the runs allow, and an ``index.md`` (and ``index.html``) showing them.

An output that the runs cannot support (no global series with enough noise levels, no clamped runs, no
checkpoints, ...) is listed under "Not made" with the reason; an output that fails for any other reason is listed
with its error. Neither stops the report. Fits that did not converge are listed with their reasons.
"""

from __future__ import annotations

import html
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.report.activations import fig4_self_binarization
from walking_noise.report.common import NOISE_STD, NotEnoughRuns, column, paper_runs, select
from walking_noise.report.global_noise import fig1_fit, fig6_training_curves, fig7_double_logistic, table1
from walking_noise.report.paper import table1_vs_paper
from walking_noise.report.walking import fig2_walking_mu, fig3_amin, fig5_preserved_accuracy, table2_weight_ratio


@dataclass
class Output:
    """One table or figure of the report and what became of it."""

    name: str
    title: str
    description: str
    files: list[Path] = field(default_factory=list)
    missing: str | None = None  # why it was not made (too few runs)
    error: str | None = None  # why it failed


def find_checkpoints(df: pd.DataFrame) -> dict[str, Any]:
    """The Fig. 4 pair from the runs: the multiplicative walking run with the largest noise that saved a
    checkpoint, and a clean run (no noise, or noise 0) of the same dataset, model and BatchNorm that saved one."""
    col = "result.checkpoint" if "result.checkpoint" in df.columns else "checkpoint"
    saved = df[column(df, col).map(lambda p: isinstance(p, str) and Path(p).is_file())]
    noisy = paper_runs(saved, "multiplicative", "walking")
    if noisy.empty:
        raise NotEnoughRuns("Fig. 4: no multiplicative walking run saved a checkpoint (set `checkpoint: PATH` in "
                            "its config) and none was given")
    best = noisy.loc[noisy[NOISE_STD].astype(float).idxmax()]
    same = select(saved, dataset=best["dataset"], model=best["model"], batchnorm=best["batchnorm"])
    clean = same[(column(same, "noise.kind") == "none") | (column(same, NOISE_STD).astype(float) == 0)]
    if clean.empty:
        raise NotEnoughRuns(f"Fig. 4: no clean run (noise kind none or noise_std 0) of {best['dataset']} "
                            f"{best['model']} batchnorm={best['batchnorm']} saved a checkpoint to compare with")
    return {"noisy": best[col], "clean": clean.iloc[0][col], "injection_layer": int(best["noise.injection_layer"])}


def _fig4(df: pd.DataFrame, out_dir: Path, checkpoints: dict[str, Any] | None) -> list[Path]:
    pair = checkpoints or find_checkpoints(df)
    return fig4_self_binarization(pair["noisy"], pair["clean"], pair.get("data"), pair.get("injection_layer"),
                                  out_dir)


def _outputs(checkpoints: dict[str, Any] | None) -> list[tuple[Output, Callable[[pd.DataFrame, Path], list[Path]]]]:
    return [
        (Output("table1", "Table I: robustness mu to global noise",
                "Midpoint noise level per dataset, model, BatchNorm and noise kind (Eq. 1 fitted to accuracy vs "
                "noise std)."), table1),
        (Output("table1_vs_paper", "Table I beside the paper",
                "Each Table I cell that the paper also reports, with the paper's mu, the ratio and how the runs "
                "differ (epochs, levels, seeds)."), table1_vs_paper),
        (Output("fig1", "Fig. 1: logistic fits of global noise",
                "Accuracy vs noise std with seed spread and the fitted Eq. 1, one panel per series."), fig1_fit),
        (Output("fig6", "Fig. 6: training curves under global noise",
                "Validation accuracy per epoch for several noise levels."), fig6_training_curves),
        (Output("fig7", "Fig. 7: two stacked logistics",
                "The double logistic of appendix B beside one logistic, on the series where it fits best; each "
                "panel says whether its measured levels show an intermediate plateau (>= 2 levels between the "
                "two steps)."),
         fig7_double_logistic),
        (Output("fig2", "Fig. 2 / 10 / 11: walking mu per injection point (additive)",
                "Noise only at inference (blue), in training (orange), in training with clamped weights (green)."),
         lambda df, out: fig2_walking_mu(df, out, kind="additive")),
        (Output("fig2m", "Fig. 2 style: walking mu per injection point (multiplicative)",
                "The same three roles for multiplicative noise; a point whose curve never drops within the tested "
                "range shows as a lower bound."),
         lambda df, out: fig2_walking_mu(df, out, kind="multiplicative")),
        (Output("table2", "Table II: weight magnitude ratio unclamped / clamped",
                "Mean |w| at the noise level closest to mu, per learnable layer, with and without BatchNorm."),
         table2_weight_ratio),
        (Output("fig3", "Fig. 3: lower accuracy bound a_min, multiplicative walking noise",
                "Fitted a_min per injection point and the accuracy measured at the largest noise."), fig3_amin),
        (Output("fig5", "Fig. 5 / 8 / 9: preserved accuracy, multiplicative walking noise",
                "Accuracy at the largest noise / at no noise, per point, one series per dataset."),
         fig5_preserved_accuracy),
        (Output("fig4", "Fig. 4: self-binarization of activations",
                "Activation histograms of a noisy-trained vs a clean model and a 2/3-level quantization probe."),
         lambda df, out: _fig4(df, out, checkpoints)),
    ]


def _not_converged(files: list[Path]) -> list[str]:
    """Lines naming the fits in the CSVs ``files`` that did not converge, with their reasons."""
    lines = []
    for path in files:
        if path.suffix != ".csv":
            continue
        table = pd.read_csv(path)
        if "converged" not in table.columns:
            continue
        bad = table[~table["converged"].astype(bool)]
        if bad.empty:
            continue
        lines.append(f"- `{path.name}`: {len(bad)} of {len(table)} fits did not converge")
        for _, row in bad.head(10).iterrows():
            what = ", ".join(f"{c}={row[c]}" for c in ("dataset", "model", "batchnorm", "noise.kind", "point", "role")
                             if c in row and not (isinstance(row[c], float) and np.isnan(row[c])))
            lines.append(f"  - {what}: {row.get('reason')}")
        if len(bad) > 10:
            lines.append(f"  - ... and {len(bad) - 10} more (see the CSV)")
    return lines


DECISIONS = """\
## How these outputs were made

- **Fits**: Eq. 1 fitted with `walking_noise.fit.fit_midpoint` to the final accuracy (mean of the last five
  epochs) of every run of a series, weighted by the seed spread per noise level. A series is every run with the
  same config except seed and noise std.
- **Fit axis**: log10 when the positive noise levels span >= 2 decades and are more evenly spaced on a log
  scale than on a linear one, else linear (decided per series by its grid, not by the noise kind). mu is always in
  noise-std units.
- **Errors**: "mu ± err" quotes the larger of the chi2-scaled covariance error and the leave-one-seed-out
  jackknife error (the jackknife needs >= 3 seeds).
- **Too few runs**: a single-logistic fit needs >= 4 distinct noise levels, the double logistic >= 8; preserved
  accuracy and training curves need >= 2 levels; Table II needs clamped and unclamped runs at the same learnable
  point and noise level; Fig. 4 needs a noisy and a clean checkpoint.
- **Fig. 4 quantization threshold**: Otsu's threshold of log10|a| over the non-zero activations of the point;
  2 levels = {0, mean of a > t}, 3 levels = {mean of a < -t, 0, mean of a > t}.
"""


def write_report(df: pd.DataFrame, out_dir: str | Path, checkpoints: dict[str, Any] | None = None) -> Path:
    """Write every output the runs in ``df`` support into ``out_dir``; return the path of ``index.md``.

    ``checkpoints``: ``{"noisy": path, "clean": path, "injection_layer": int (optional), "data": DatasetSplits
    (optional)}`` for Fig. 4; None looks for checkpoints saved by the runs themselves. Never trains; a failing or
    impossible output is listed in the index instead of raising.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[Output] = []
    for output, make in _outputs(checkpoints):
        try:
            output.files = [Path(p) for p in make(df, out_dir)]
        except NotEnoughRuns as why:
            output.missing = str(why)
        except Exception as err:  # noqa: BLE001 - one broken output must not cost the others
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            output.error = last
        done.append(output)
    from walking_noise.export import write_export

    export = write_export(df, out_dir / "runs.csv")
    index = out_dir / "index.md"
    text = _index_text(df, done, out_dir, export)
    index.write_text(text)
    (out_dir / "index.html").write_text(markdown_to_html(text, "Walking Noise report"))
    return index


def _index_text(df: pd.DataFrame, done: list[Output], out_dir: Path, export: Path) -> str:
    source = df.attrs.get("source", "a DataFrame")
    statuses = column(df, "status").value_counts(dropna=False).to_dict() if len(df) else {}
    lines = ["# Walking Noise report", "",
             f"{len(df)} runs from {source} ({', '.join(f'{n} {s}' for s, n in statuses.items()) or 'none'}); "
             f"written {datetime.now(timezone.utc).isoformat(timespec='seconds')}.", ""]
    if df.attrs.get("study"):
        lines += [f"Study `{df.attrs['study']}`: exactly its runs (its grid configs and the runs its adaptive "
                  f"searches chose); {df.attrs.get('left_out', 0)} other runs of the source left out.", ""]
        lines += [f"- note: {n}" for n in df.attrs.get("selection_notes", [])] + [""]
    lines += [f"Per-run export: [{export.name}]({export.name}) (one row per run: config, final accuracy, per-epoch "
              f"accuracy; columns documented in `walking_noise.export`).", ""]
    made = [o for o in done if o.files]
    lines += ["## Contents", ""] + [f"- [{o.title}](#{_anchor(o.title)})" for o in made] + [""]
    for o in made:
        lines += [f"## {o.title}", "", o.description, ""]
        for path in o.files:
            rel = path.relative_to(out_dir) if path.is_relative_to(out_dir) else path
            if path.suffix == ".png":
                lines += [f"![{path.stem}]({rel.as_posix()})", ""]
            elif path.suffix == ".md":
                body = path.read_text().splitlines()
                body = [("#" + line if line.startswith("#") else line) for line in body]  # one level deeper
                lines += body + [""]
        links = [f"[{p.name}]({(p.relative_to(out_dir) if p.is_relative_to(out_dir) else p).as_posix()})"
                 for p in o.files if p.suffix == ".csv"]
        if links:
            lines += ["Data: " + ", ".join(links), ""]
    missing = [o for o in done if not o.files]
    lines += ["## Not made", ""]
    if missing:
        for o in missing:
            why = o.missing or (f"failed: {o.error}" if o.error else "nothing to show")
            why = re.sub(r"^(Fig\. [^:]+|Table [IV]+): ", "", why)  # the title already says which
            lines.append(f"- **{o.title}**: {why}")
    else:
        lines.append("Every output was made.")
    lines.append("")
    bad = _not_converged([p for o in made for p in o.files])
    lines += ["## Fits that did not converge", ""] + (bad or ["None."]) + [""]
    lines.append(DECISIONS)
    return "\n".join(lines)


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def markdown_to_html(text: str, title: str) -> str:
    """The small Markdown subset the index uses (headings, images, tables, lists, links) as a standalone page."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"]
    table: list[list[str]] = []

    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
        s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
        return re.sub(r"\[(.+?)\]\((.+?)\)", r"<a href='\2'>\1</a>", s)

    def flush() -> None:
        if table:
            rows = [r for r in table if not all(set(c.strip()) <= {"-"} for c in r)]
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{inline(c.strip())}</{'th' if i == 0 else 'td'}>"
                                 for c in r) + "</tr>" for i, r in enumerate(rows)) + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(re.split(r"(?<!\\)\|", line.strip())[1:-1])
            continue
        flush()
        if m := re.match(r"(#+) (.*)", line):
            level = min(len(m.group(1)), 6)
            out.append(f"<h{level} id='{_anchor(m.group(2))}'>{inline(m.group(2))}</h{level}>")
        elif m := re.match(r"!\[(.*?)\]\((.+?)\)", line):
            out.append(f"<p><img src='{html.escape(m.group(2))}' alt='{html.escape(m.group(1))}'></p>")
        elif line.lstrip().startswith("- "):
            out.append(f"<li>{inline(line.lstrip()[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    out.append("</body></html>")
    return "\n".join(out)
