"""The paper's tables and figures from a DataFrame of runs (:mod:`walking_noise.results`), one function each.

Every function takes the runs DataFrame and an output folder, writes PNG and CSV/Markdown files there and returns
their paths; it raises :class:`NotEnoughRuns` when the runs cannot support it. None of them trains a model; only
Fig. 4 evaluates two saved checkpoints. :func:`write_report` makes every output that applies and an index.

========================================  ==================================================================
``table1(df, out)``                       Table I: mu of global noise per dataset/model/BatchNorm/kind
``fig1_fit(df, out)``                     Fig. 1: accuracy vs noise with error bars and the fitted logistic
``fig6_training_curves(df, out)``         Fig. 6: validation accuracy per epoch for several noise levels
``fig7_double_logistic(df, out)``         Fig. 7: two stacked logistics on a curve with a plateau
``fig2_walking_mu(df, out)``              Fig. 2/10/11: walking mu per injection point, three series
``fig3_amin(df, out)``                    Fig. 3: fitted a_min per point, multiplicative walking noise
``fig5_preserved_accuracy(df, out)``      Fig. 5/8/9: accuracy at the largest / at no noise, per point
``table2_weight_ratio(df, out)``          Table II: mean |w| unclamped / clamped near mu, per learnable layer
``fig4_self_binarization(...)``           Fig. 4: activation histograms and the 2/3-level quantization probe
``write_sensitivity(df, out)``            a trained model's sensitivity: per-point table, ranking, mu per point
``write_outputs(df, out, only=...)``      the named outputs (``output_names()``), each where the runs support it
``write_report(df, out)``                 all of the above that apply, plus index.md / index.html
========================================  ==================================================================
"""

from importlib import import_module
from typing import Any

# Names resolve on first use (PEP 562): `walking-noise run` builds the report sub-command parser on every start and
# must not pay for importing matplotlib and every figure module when it only trains.
_HOMES = {
    "fig4_self_binarization": "activations",
    "NotEnoughRuns": "common", "choose_axis": "common", "fit_series": "common", "format_pm": "common",
    "format_fit": "common", "format_interval": "common", "series_of": "common",
    "fig1_fit": "global_noise", "fig6_training_curves": "global_noise", "fig7_double_logistic": "global_noise",
    "table1": "global_noise",
    "find_checkpoints": "index", "output_names": "index", "write_outputs": "index", "write_report": "index",
    "fig2_walking_mu": "walking", "fig3_amin": "walking", "fig5_preserved_accuracy": "walking",
    "table2_weight_ratio": "weights",
    "write_sensitivity": "sensitivity",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'walking_noise.report' has no attribute {name!r}")
    value = getattr(import_module(f"walking_noise.report.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
