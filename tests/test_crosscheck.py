"""psignifit 4 as a second opinion on mu (walking_noise.fit.crosscheck): on a simulated campaign with a known midpoint
its estimate and ours agree, and both find the truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from walking_noise.fit import fit_midpoint

psignifit = pytest.importorskip("psignifit")  # a test dependency (pyproject's [test] extra); optional at run time

from walking_noise.fit.crosscheck import psignifit_midpoint  # noqa: E402

TRUE_MU, TRUE_SIGMA, N_TEST = 0.9, 0.12, 10_000


@pytest.mark.slow
def test_psignifit_and_our_fit_agree_on_a_known_midpoint():
    # a multiplicative MNIST-like curve: 11 levels 0..2, 3 seeds, binomial test-set noise of 10,000 images
    rng = np.random.default_rng(3)
    levels = np.linspace(0.0, 2.0, 11)
    noise_std = np.repeat(levels, 3)
    seeds = np.tile(np.arange(3), levels.size)
    accuracy = rng.binomial(N_TEST, 0.1 + 0.88 * expit(-(noise_std - TRUE_MU) / TRUE_SIGMA)) / N_TEST

    ours = fit_midpoint(noise_std, accuracy, seeds=seeds)
    theirs = psignifit_midpoint(noise_std, accuracy, N_TEST)
    assert ours.mu_lo95 <= TRUE_MU <= ours.mu_hi95
    assert abs(theirs["mu"] - TRUE_MU) < 0.02 * TRUE_MU
    # the agreement rule of analysis/psignifit_check.py: within half the width of our 95 % interval
    assert abs(theirs["mu"] - ours.mu) <= (ours.mu_hi95 - ours.mu_lo95) / 2
    assert theirs["sigma"] == pytest.approx(-TRUE_SIGMA, rel=0.25)  # a falling curve: negative sigma, as in Eq. 1
    assert theirs["lo95"] <= theirs["lo68"] <= theirs["hi68"] <= theirs["hi95"]
