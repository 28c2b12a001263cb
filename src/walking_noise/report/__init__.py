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
``write_report(df, out)``                 all of the above that apply, plus index.md / index.html
========================================  ==================================================================
"""

from walking_noise.report.activations import fig4_self_binarization
from walking_noise.report.common import NotEnoughRuns, choose_axis, fit_series, format_pm, series_of
from walking_noise.report.global_noise import fig1_fit, fig6_training_curves, fig7_double_logistic, table1
from walking_noise.report.index import find_checkpoints, write_report
from walking_noise.report.walking import fig2_walking_mu, fig3_amin, fig5_preserved_accuracy, table2_weight_ratio

__all__ = [
    "NotEnoughRuns", "choose_axis", "fit_series", "format_pm", "series_of",
    "table1", "fig1_fit", "fig6_training_curves", "fig7_double_logistic",
    "fig2_walking_mu", "fig3_amin", "fig5_preserved_accuracy", "table2_weight_ratio",
    "fig4_self_binarization", "find_checkpoints", "write_report",
]
