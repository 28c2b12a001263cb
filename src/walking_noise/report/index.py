"""``write_report``: every table and figure the runs allow, and an ``index.md`` (and ``index.html``) showing them.

An output that the runs cannot support (no global series with enough noise levels, no clamped runs, no
checkpoints, ...) is listed under "Not made" with the reason; an output that fails for any other reason is listed
with its error. Neither stops the report. Fits that did not converge are listed with their reasons.

The page tells a reader first what they would otherwise dig for: the study and when the page was written, how many
runs each series has (and how many did not complete), beside each figure the parameters of the fits it draws (from
the CSV written with it), and links to the per-run export. ``index.html`` is one static file with relative links
and no script or remote resource, so it opens from a cluster's shared filesystem or an unpacked zip;
``tests/test_report_browser.py`` opens it in headless Chromium.
"""

from __future__ import annotations

import html
import re
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.report.activations import fig4_self_binarization
from walking_noise.report.common import (
    NOISE_STD, NotEnoughRuns, column, display, format_bound, format_fit, format_pm, markdown_table, paper_runs,
    select, series_of, short_name, varying,
)
from walking_noise.report.global_noise import fig1_fit, fig6_training_curves, fig7_double_logistic, table1
from walking_noise.report.paper import table1_vs_paper
from walking_noise.report.sensitivity import write_sensitivity
from walking_noise.report.walking import fig2_walking_mu, fig3_amin, fig5_preserved_accuracy
from walking_noise.report.weights import table2_weight_ratio


@dataclass
class Output:
    """One table or figure of the report and what became of it."""

    name: str
    title: str
    description: str
    files: list[Path] = field(default_factory=list)
    missing: str | None = None  # why it was not made (too few runs)
    error: str | None = None  # why it failed
    fits_from: str | None = None  # the output whose CSV holds this figure's fits, when it writes none itself


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
                "Accuracy vs noise std with seed spread and the fitted Eq. 1, one panel per series.",
                fits_from="table1"), fig1_fit),
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
        (Output("sensitivity", "Sensitivity of a trained model, point by point",
                "Trained weights evaluated under noise at inference (walking: one point noisy; leave-one-out: all "
                "but one; global: all). Repeats are independent noise draws over the whole test set, not retrained "
                "models. Per point mu ± error, a_min, the accuracy at the largest s; the ranking below."),
         write_sensitivity),
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


def accuracy_rule(df: pd.DataFrame) -> str:
    """What the final accuracy of the runs in ``df`` averages, as the runs recorded it (``final_epochs_averaged``
    of ``training.epochs``): the paper's last five epochs, or the second half of a shorter training."""
    pairs = df[["training.epochs", "final_epochs_averaged"]].dropna() if {"training.epochs", "final_epochs_averaged"} \
        <= set(df.columns) else pd.DataFrame()
    if pairs.empty:
        return "the mean of the last five epochs, or of the second half of a run shorter than ten epochs"
    seen = sorted({(int(e), int(a)) for e, a in pairs.itertuples(index=False)})
    parts = [f"the last {a} of {e} epochs" if a > 1 else f"the last epoch of {e}" for e, a in seen]
    return "mean over " + "; ".join(parts[:4]) + (f"; and {len(parts) - 4} more" if len(parts) > 4 else "")


DECISIONS = """\
## How these outputs were made

- **Fits**: Eq. 1 fitted with `walking_noise.fit.fit_midpoint` to the final accuracy ({accuracy_rule}) of every
  run of a series, weighted by the seed spread per noise level. A series is every run with the same config except
  seed and noise std.
- **Fit axis**: log10 when the positive noise levels span >= 2 decades and are more evenly spaced on a log
  scale than on a linear one, else linear (decided per series by its grid, not by the noise kind). mu is always in
  noise-std units.
- **Errors**: mu is quoted with its 68 % interval: the leave-one-seed-out jackknife of the whole fit with Student t
  quantiles of (seeds - 1) dof, on the fit axis (on a log10 axis symmetric in log10 mu, so "+up/-down" in mu),
  checked on simulated campaigns (`benchmarks/fit_coverage.py`: 95 % intervals cover 93-97 % with >= 3 seeds).
  Where it cannot be calibrated the number says so: "2 seeds: 1 dof" (the interval's scale is one difference),
  "bracketed between levels" (no level on the slope: the interval is the bracket), "no seed labels" / "1 seed"
  (the covariance error). The 95 % intervals are in the CSVs.
- **Which points differ** (walking noise): differences of log10 mu with a paired seed jackknife, Student t tests,
  Holm-corrected over all the pairs of one figure; letters on the figure group the points of a curve that cannot
  be told apart.
- **Too few runs**: a single-logistic fit needs >= 4 distinct noise levels, the double logistic >= 8; preserved
  accuracy and training curves need >= 2 levels; Table II needs clamped and unclamped runs at the same learnable
  point and noise level; Fig. 4 needs a noisy and a clean checkpoint.
- **Fig. 4 quantization threshold**: Otsu's threshold of log10|a| over the non-zero activations of the point;
  2 levels = {0, mean of a > t}, 3 levels = {mean of a < -t, 0, mean of a > t}.
"""


def output_names(only: Sequence[str] | None = None) -> list[str]:
    """The names of the report's outputs (``walking-noise report --only``, ``analysis/*.py``), or of those in
    ``only`` after checking that each exists."""
    names = [output.name for output, _ in _outputs(None)]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown report output(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    return [name for name in names if name in only] if only else names


def write_outputs(df: pd.DataFrame, out_dir: str | Path, checkpoints: dict[str, Any] | None = None,
                  only: Sequence[str] | None = None) -> list[Output]:
    """Make the outputs (all, or those named in ``only``) that the runs in ``df`` support in ``out_dir``; a failing
    or impossible output says why in its :class:`Output` instead of raising."""
    wanted = output_names(only)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[Output] = []
    for output, make in _outputs(checkpoints):
        if output.name not in wanted:
            continue
        try:
            output.files = [Path(p) for p in make(df, out_dir)]
        except NotEnoughRuns as why:
            output.missing = str(why)
        except Exception as err:  # noqa: BLE001 - one broken output must not cost the others
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            output.error = last
        done.append(output)
    return done


def write_report(df: pd.DataFrame, out_dir: str | Path, checkpoints: dict[str, Any] | None = None,
                 only: Sequence[str] | None = None) -> Path:
    """Write every output the runs in ``df`` support (or those named in ``only``) into ``out_dir``, with the index
    and the per-run export; return the path of ``index.md``.

    ``checkpoints``: ``{"noisy": path, "clean": path, "injection_layer": int (optional), "data": DatasetSplits
    (optional)}`` for Fig. 4; None looks for checkpoints saved by the runs themselves. Never trains; a failing or
    impossible output is listed in the index instead of raising.
    """
    out_dir = Path(out_dir)
    done = write_outputs(df, out_dir, checkpoints, only)
    from walking_noise.export import write_export

    export = write_export(df, out_dir / "runs.csv")
    index = out_dir / "index.md"
    text = _index_text(df, done, out_dir, export)
    index.write_text(text)
    (out_dir / "index.html").write_text(markdown_to_html(text, f"Walking Noise report: {study_name(df)}"))
    return index


#: Rows of a long table shown in the index; the CSV beside it has every row.
MAX_ROWS = 40
#: Fit fields shown beside a figure (CSV column, heading), after mu ± its reported error; the CSV has every field.
FIT_COLUMNS = (("sigma", "sigma"), ("delta_a", "delta_a"), ("a_min", "a_min"), ("chi2_red", "chi2_red"),
               ("n_levels", "levels"), ("n_runs", "runs"))
#: Columns of a fit table that tell its series apart; those that vary between its rows are shown.
SERIES_FIELDS = ("dataset", "model", "batchnorm", "noise.kind", "noise.placement", "noise.phase", "weight_clamping",
                 "point", "role", "fit_model")


def study_name(df: pd.DataFrame) -> str:
    """The study the page is about: the one selected with ``--study``, else the study every run names, else the
    store folder's (or the source's) name."""
    if df.attrs.get("study"):
        return str(df.attrs["study"])
    named = column(df, "study").dropna().unique()
    if len(named) == 1:
        return str(named[0])
    source = str(df.attrs.get("source") or "")
    return Path(source).name if source and Path(source).exists() else (source or "runs")


def _index_text(df: pd.DataFrame, done: list[Output], out_dir: Path, export: Path) -> str:
    made = [o for o in done if o.files]
    by_name = {o.name: o for o in done}
    lines = _header(df, export)
    contents = ["Runs per series"] + [o.title for o in made] + ["Not made", "Fits that did not converge",
                                                                 "How these outputs were made"]
    lines += ["## Contents", ""] + [f"- [{t}](#{_anchor(t)})" for t in contents] + [""]
    lines += ["## Runs per series", ""] + _series_counts(df)
    for o in made:
        lines += _section(o, out_dir, by_name)
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
    lines.append(DECISIONS.replace("{accuracy_rule}", accuracy_rule(df)))
    return "\n".join(lines)


def _header(df: pd.DataFrame, export: Path) -> list[str]:
    """Title, study, date, what the runs are and where they came from, and the links to the per-run data."""
    name = study_name(df)
    statuses = column(df, "status").value_counts(dropna=False).to_dict() if len(df) else {}
    counts = ", ".join(f"{n} {s}" for s, n in statuses.items()) or "none"
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Walking Noise report: {name}", "",
             f"**Study** `{name}` · **written** {written} · **{len(df)} runs** ({counts}) from "
             f"`{df.attrs.get('source', 'a DataFrame')}`", ""]
    if df.attrs.get("study"):
        lines += [f"Exactly the study's runs (its grid configs and the runs its adaptive searches chose); "
                  f"{df.attrs.get('left_out', 0)} other runs of the source left out.", ""]
        lines += [f"- note: {n}" for n in df.attrs.get("selection_notes", [])] + [""]
    lines += [f"Per-run export: [{export.name}]({export.name}) (one row per run: config, final accuracy, per-epoch "
              f"accuracy; columns documented in `walking_noise.export`). This page as Markdown: "
              f"[index.md](index.md).", ""]
    return lines


def _series_counts(df: pd.DataFrame) -> list[str]:
    """A table: per series (runs that differ only in seed and noise level), its runs, failures, levels and seeds."""
    series = series_of(df)
    if not series:
        return ["No runs.", ""]
    keys = varying(series)
    rows = []
    for s in series[:MAX_ROWS]:
        status = column(s.runs, "status", "COMPLETED").fillna("COMPLETED")
        levels = pd.to_numeric(column(s.runs, NOISE_STD), errors="coerce").dropna()
        spread = f"{levels.min():g}" + (f" to {levels.max():g}" if levels.nunique() > 1 else "")
        rows.append([display(s.key.get(k)) if s.key.get(k) is not None else "" for k in keys]
                    + [len(s.runs), int((status == "COMPLETED").sum()), int((status != "COMPLETED").sum()),
                       f"{levels.nunique()} ({spread})" if len(levels) else "0",
                       int(column(s.runs, "seed").nunique())])
    headers = [short_name(k) for k in keys] + ["runs", "completed", "not completed", "noise levels", "seeds"]
    if not keys:
        headers, rows = ["series"] + headers, [["all runs"] + r for r in rows]
    lines = [f"{len(series)} series; a series is every run with the same config except seed and noise std.", "",
             markdown_table(headers, rows)]
    if len(series) > MAX_ROWS:
        lines += [f"... and {len(series) - MAX_ROWS} more series (every run is in the per-run export).", ""]
    return lines


def _section(o: Output, out_dir: Path, by_name: dict[str, Output]) -> list[str]:
    """One output's section: its figures, its Markdown tables, the fits behind its figures and links to its CSVs."""
    lines = [f"## {o.title}", "", o.description, ""]
    for path in o.files:
        if path.suffix == ".png":
            lines += [f"![{path.stem}]({_rel(path, out_dir)})", ""]
        elif path.suffix == ".md":
            body = path.read_text().splitlines()
            lines += [("##" + line if line.startswith("#") else line) for line in body] + [""]  # inside the section
    if any(p.suffix == ".png" for p in o.files):
        source = by_name.get(o.fits_from) if o.fits_from else o
        for path in (source.files if source else []):
            if path.suffix == ".csv":
                lines += _fit_parameters(path, out_dir)
    links = [f"[{p.name}]({_rel(p, out_dir)})" for p in o.files if p.suffix == ".csv"]
    if links:
        lines += ["Data: " + ", ".join(links), ""]
    return lines


def _fit_parameters(path: Path, out_dir: Path) -> list[str]:
    """The fits in the CSV ``path`` as a table to read beside the figure: which series, mu ± error and the other
    parameters of Eq. 1 (empty when the CSV holds no fits)."""
    table = pd.read_csv(path)
    if "mu" not in table.columns or table.empty:
        return []
    keys = [c for c in SERIES_FIELDS if c in table.columns and table[c].astype(str).nunique() > 1]
    keys = keys or [c for c in SERIES_FIELDS[:4] if c in table.columns]
    if "role" in keys:  # the role names the phase and the clamping already
        keys = [k for k in keys if k not in ("noise.phase", "weight_clamping")]
    fields = [(c, h) for c, h in FIT_COLUMNS if c in table.columns]
    err = "mu_err_reported" if "mu_err_reported" in table.columns else "mu_err"  # tables written before mu_err was it
    rows = []
    for _, row in table.head(MAX_ROWS).iterrows():
        if not bool(row.get("converged", True)):
            mu = _bound(row)
        elif "mu_lo68" in table.columns:
            mu = format_fit(row)
        else:  # a fit table written before the intervals
            mu = format_pm(_number(row.get("mu")), _number(row.get(err)))
        rows.append([_cell(row[k]) for k in keys] + [mu] + [_cell(row[c]) for c, _ in fields])
    lines = [f"**Fit parameters** (Eq. 1, from [{path.name}]({_rel(path, out_dir)}); sigma in units of the fit "
             f"axis, every other field in the CSV):", "",
             markdown_table([short_name(k) for k in keys] + ["mu (68 %)"] + [h for _, h in fields], rows)]
    if len(table) > MAX_ROWS:
        lines += [f"... and {len(table) - MAX_ROWS} more fits in {path.name}.", ""]
    return lines


def _bound(row: pd.Series) -> str:
    """A fit table's mu cell where no midpoint was fitted: the bound the data give, as the figures draw it (a
    curve that never leaves its upper plateau: mu above the largest tested level), else "not converged"."""
    bound = format_bound(_number(row.get("mu_lower_bound")), _number(row.get("mu_upper_bound")))
    return "not converged" if bound is None else f"{bound} (bound)"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _cell(value: Any) -> str:
    """A table cell: numbers to 3 significant digits, missing values empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return display(value.item() if isinstance(value, np.generic) else value)


def _rel(path: Path, out_dir: Path) -> str:
    return (path.relative_to(out_dir) if path.is_relative_to(out_dir) else path).as_posix()


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em;line-height:1.4}"
         "img{max-width:100%}.table{overflow-x:auto}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:2px 6px}th{background:#f3f3f3}td.n{text-align:right}"
         "code{background:#f6f6f6}")
#: A table cell that starts with a number (a value, a value ± error, a count with its range): aligned right.
NUMBER = re.compile(r"\(?[-+]?\.?\d")


def markdown_to_html(text: str, title: str) -> str:
    """The small Markdown subset the index uses (headings, images, tables, lists, links) as one static page: no
    script, no remote resource, so it opens from a shared filesystem or an unpacked zip."""
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head><body>"]
    table: list[list[str]] = []
    in_list = False

    def inline(s: str) -> str:
        s = html.escape(s, quote=False)
        s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
        s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
        return re.sub(r"\[(.+?)\]\((.+?)\)", lambda m: f"<a href=\"{html.escape(m.group(2))}\">{m.group(1)}</a>", s)

    def flush() -> None:
        if table:
            rows = [r for r in table if not all(set(c.strip()) <= {"-"} for c in r)]
            cells = ["".join(f"<{tag}{_align(tag, c.strip())}>{inline(c.strip().replace(chr(92) + '|', '|'))}</{tag}>"
                             for c in r) for tag, r in (("th" if i == 0 else "td", r) for i, r in enumerate(rows))]
            out.append("<div class='table'><table>" + "".join(f"<tr>{c}</tr>" for c in cells) + "</table></div>")
            table.clear()

    block: list[str] = []  # the open list item or paragraph: [opening tag, text, closing tag]

    def close_block() -> None:
        if block:
            out.append(f"{block[0]}{inline(block[1])}{block[2]}")
            block.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            close_block()
            table.append(re.split(r"(?<!\\)\|", line.strip())[1:-1])
            continue
        flush()
        item = line.lstrip().startswith("- ")
        heading, image = re.match(r"(#+) (.*)", line), re.match(r"!\[(.*?)\]\((.+?)\)", line)
        if line.strip() and block and not (item or heading or image):  # a hard-wrapped continuation line
            block[1] += " " + line.strip()
            continue
        close_block()
        if in_list and not item:
            out.append("</ul>")
            in_list = False
        if heading:
            level = min(len(heading.group(1)), 6)
            out.append(f"<h{level} id='{_anchor(heading.group(2))}'>{inline(heading.group(2))}</h{level}>")
        elif image:
            out.append(f"<p><img src=\"{html.escape(image.group(2))}\" alt=\"{html.escape(image.group(1))}\"></p>")
        elif item:
            if not in_list:
                out.append("<ul>")
                in_list = True
            indent = (len(line) - len(line.lstrip())) // 2
            style = f" style='margin-left:{1.5 * indent}em'" if indent else ""
            block.extend([f"<li{style}>", line.lstrip()[2:], "</li>"])
        elif line.strip():
            block.extend(["<p>", line.strip(), "</p>"])
    close_block()
    flush()
    if in_list:
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def _align(tag: str, cell: str) -> str:
    return " class='n'" if tag == "td" and NUMBER.match(cell) else ""
