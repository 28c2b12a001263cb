"""The compiled CPU Gaussian generator: distribution, independence, seeding, sizes and the torch fallback."""

from __future__ import annotations

import ctypes
import platform
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

from walking_noise import gaussian
from walking_noise.training import keep_freed_memory

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                    reason="no C compiler: the generator falls back to torch.randn")


@pytest.fixture(scope="module")
def draws() -> np.ndarray:
    torch.manual_seed(0)
    return gaussian.standard_normal_like(torch.empty(2_000_000)).numpy().astype(np.float64)


@needs_compiler
def test_fast_backend_is_used_where_a_compiler_exists() -> None:
    assert gaussian.backend() == "fast"


@needs_compiler
def test_draws_are_standard_normal(draws: np.ndarray) -> None:
    assert abs(draws.mean()) < 0.003  # standard error 0.0007
    assert abs(draws.var() - 1.0) < 0.005  # standard error 0.001
    assert abs(stats.skew(draws)) < 0.01
    assert abs(stats.kurtosis(draws, fisher=False) - 3.0) < 0.03
    assert stats.kstest(draws[:200_000], "norm").pvalue > 1e-3
    # the tails: two-sided 3-sigma mass 0.0027 (5,400 expected here), and the bound of the 31-bit radius
    tail = np.mean(np.abs(draws) > 3.0)
    assert abs(tail - 2 * stats.norm.sf(3.0)) < 0.0004
    assert np.abs(draws).max() <= 6.67
    # symmetric in every quadrant of the Box-Muller angle: the sign is a fair coin
    assert abs(np.mean(draws > 0) - 0.5) < 0.002


@needs_compiler
def test_draws_are_uncorrelated(draws: np.ndarray) -> None:
    # lags 1, the SIMD lane count (16) and a Box-Muller pair (16 apart within a block of 32), and a block
    for lag in (1, 2, 15, 16, 17, 32, 33, 1000):
        r = np.corrcoef(draws[:-lag], draws[lag:])[0, 1]
        assert abs(r) < 0.004, f"lag {lag}: correlation {r}"
    # squares too: the radius is shared by a Box-Muller pair, but its two outputs must stay uncorrelated in power
    sq = draws**2
    r = np.corrcoef(sq[:-16], sq[16:])[0, 1]
    assert abs(r) < 0.004


@needs_compiler
def test_seeded_by_torch_and_fresh_on_every_call() -> None:
    x = torch.empty(10_000)
    torch.manual_seed(3)
    a, b = gaussian.standard_normal_like(x), gaussian.standard_normal_like(x)
    torch.manual_seed(3)
    assert torch.equal(gaussian.standard_normal_like(x), a)
    assert not torch.equal(a, b)
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.05
    torch.manual_seed(4)
    assert not torch.equal(gaussian.standard_normal_like(x), a)


@needs_compiler
@pytest.mark.parametrize("n", [1, 2, 31, 32, 33, 63, 64, 65, 1001])
def test_writes_exactly_n_values(n: int) -> None:
    lib = gaussian._load()
    assert lib is not None
    buf = torch.full((n + 64,), 123.0)
    lib.wn_standard_normal(ctypes.c_void_p(buf.data_ptr()), n, 7)
    assert torch.all(buf[n:] == 123.0), "wrote past the end"
    assert torch.all(torch.isfinite(buf[:n])) and torch.all(buf[:n] != 123.0)


def test_shapes_layouts_and_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    strided = torch.empty(64, 32).t()  # not contiguous: the draw keeps the layout and covers every element
    out = gaussian.standard_normal_like(strided)
    assert out.shape == strided.shape and out.dtype == torch.float32
    assert abs(float(out.mean())) < 0.2 and abs(float(out.std()) - 1.0) < 0.1
    double = gaussian.standard_normal_like(torch.empty(1000, dtype=torch.float64))
    assert double.dtype == torch.float64  # not float32: torch's generator
    monkeypatch.setenv(gaussian.BACKEND_ENV, "torch")
    assert gaussian.backend() == "torch"
    torch.manual_seed(1)
    via_torch = gaussian.standard_normal_like(torch.empty(100))
    torch.manual_seed(1)
    assert torch.equal(via_torch, torch.randn(100))


def test_without_a_working_compiler_noise_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(gaussian, "_tried", False)
    monkeypatch.setattr(gaussian, "_library", None)
    monkeypatch.setenv(gaussian.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with pytest.warns(RuntimeWarning, match="torch.randn"):
        assert gaussian.backend() == "torch"
    out = gaussian.standard_normal_like(torch.empty(1000))
    assert out.shape == (1000,) and abs(float(out.std()) - 1.0) < 0.15
    assert not list(tmp_path.glob("*.so"))


def test_keep_freed_memory_is_idempotent() -> None:
    first = keep_freed_memory()
    assert keep_freed_memory() == first
    if platform.libc_ver()[0] == "glibc":
        assert first  # glibc: the setting takes effect
