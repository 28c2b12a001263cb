"""The counter-based Gaussian generator: Philox known answers, distribution, independence, the layout of the
draws, and the torch twin that must give bit-identical numbers (GPU, no compiler, WALKING_NOISE_RNG=torch)."""

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
                                    reason="no C compiler: draws come from the torch twin")

# Random123's published known answers for Philox4x32-10: (counter, key, output)
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.fixture(scope="module")
def draws() -> np.ndarray:
    return gaussian.philox_normal([2024], (1, 2, 3), 2_000_000)[0].numpy().astype(np.float64)


@needs_compiler
def test_fast_backend_is_used_where_a_compiler_exists() -> None:
    assert gaussian.backend() == "fast"


@pytest.mark.parametrize("implementation", ["c", "torch"])
def test_philox_matches_the_published_known_answers(implementation: str) -> None:
    if implementation == "c" and gaussian._load() is None:
        pytest.skip("no compiled generator")
    for counter, key, expected in PHILOX_KAT:
        assert gaussian.philox4x32_10(counter, key, implementation) == expected


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
    assert abs(np.mean(draws > 0) - 0.5) < 0.002  # symmetric in every quadrant of the Box-Muller angle


def test_draws_are_uncorrelated(draws: np.ndarray) -> None:
    # lags 1, a Philox lane block (64), the cos/sin partners of a Box-Muller pair (128 apart) and a chunk (256)
    for lag in (1, 2, 63, 64, 65, 127, 128, 129, 256, 1000):
        r = np.corrcoef(draws[:-lag], draws[lag:])[0, 1]
        assert abs(r) < 0.004, f"lag {lag}: correlation {r}"
    # squares too: a Box-Muller pair shares its radius, yet its two outputs must stay uncorrelated in power
    sq = draws**2
    r = np.corrcoef(sq[:-128], sq[128:])[0, 1]
    assert abs(r) < 0.004


def test_streams_of_neighbouring_keys_and_counters_are_independent() -> None:
    n = 200_000
    base = gaussian.philox_normal([5], (0, 0, 0), n)[0]
    others = [gaussian.philox_normal([6], (0, 0, 0), n)[0], gaussian.philox_normal([5], (1, 0, 0), n)[0],
              gaussian.philox_normal([5], (0, 1, 0), n)[0], gaussian.philox_normal([5], (0, 0, 1), n)[0]]
    for other in others:
        r = float(torch.corrcoef(torch.stack([base, other]))[0, 1])
        assert abs(r) < 0.01  # standard error 0.0022
        r2 = float(torch.corrcoef(torch.stack([base**2, other**2]))[0, 1])
        assert abs(r2) < 0.01


def test_a_members_draws_do_not_depend_on_the_other_members_or_on_the_call() -> None:
    alone = gaussian.philox_normal([11], (4, 2, 7), 1000)
    packed = gaussian.philox_normal([3, 11, 5], (4, 2, 7), 1000)
    reordered = gaussian.philox_normal([11, 3], (4, 2, 7), 1000)
    assert torch.equal(packed[1], alone[0]) and torch.equal(reordered[0], alone[0])
    # a prefix of a longer draw is the shorter draw: element i depends on (key, counter, i) only
    assert torch.equal(gaussian.philox_normal([11], (4, 2, 7), 300)[0], alone[0, :300])
    skipped = gaussian.philox_normal([3, 11, 5], (4, 2, 7), 1000, active=[False, True, False])
    assert torch.equal(skipped[1], alone[0]) and not skipped[0].any() and not skipped[2].any()


@pytest.mark.parametrize("n", [1, 7, 255, 256, 257, 1000, 70_001])
def test_the_torch_twin_gives_bit_identical_draws(n: int) -> None:
    keys = [0, 1, 2**63 + 12345, 2**64 - 1]
    fast = gaussian.philox_normal(keys, (9, 8, 0xFFFFFFFF), n)
    twin = gaussian.philox_normal_torch(keys, (9, 8, 0xFFFFFFFF), n)
    assert torch.equal(fast, twin)


def test_torch_backend_env_gives_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = gaussian.philox_normal([42, 43], (1, 1, 1), 5000, active=[True, False])
    monkeypatch.setenv(gaussian.BACKEND_ENV, "torch")
    assert gaussian.backend() == "torch"
    assert torch.equal(gaussian.philox_normal([42, 43], (1, 1, 1), 5000, active=[True, False]), fast)


@needs_compiler
@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 255, 256, 257, 1001])
def test_writes_exactly_n_values_per_member(n: int) -> None:
    lib = gaussian._load()
    assert lib is not None
    buf = torch.full((2 * n + 300,), 123.0)
    keys = np.array([7, 8], dtype=np.uint64)
    lib.wn_philox_normal(ctypes.c_void_p(buf.data_ptr()), n, 2, ctypes.c_void_p(keys.ctypes.data), None, 0, 0, 0)
    assert torch.all(buf[2 * n:] == 123.0), "wrote past the end"
    assert torch.all(torch.isfinite(buf[:2 * n])) and torch.all(buf[:2 * n] != 123.0)


def test_standard_normal_like_is_seeded_by_torch_and_fresh_on_every_call() -> None:
    x = torch.empty(10_000)
    torch.manual_seed(3)
    a, b = gaussian.standard_normal_like(x), gaussian.standard_normal_like(x)
    torch.manual_seed(3)
    assert torch.equal(gaussian.standard_normal_like(x), a)
    assert not torch.equal(a, b)
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.05
    strided = torch.empty(64, 32).t()
    out = gaussian.standard_normal_like(strided)
    assert out.shape == strided.shape and out.dtype == torch.float32
    assert gaussian.standard_normal_like(torch.empty(10, dtype=torch.float64)).dtype == torch.float64


def test_without_a_working_compiler_the_torch_twin_draws_the_same_numbers(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path) -> None:
    expected = gaussian.philox_normal_torch([77], (1, 2, 3), 4000)
    monkeypatch.setattr(gaussian, "_tried", False)
    monkeypatch.setattr(gaussian, "_library", None)
    monkeypatch.setenv(gaussian.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with pytest.warns(RuntimeWarning, match="torch twin"):
        assert gaussian.backend() == "torch"
    out = gaussian.philox_normal([77], (1, 2, 3), 4000)
    assert torch.equal(out, expected)
    assert not list(tmp_path.glob("*.so"))


def test_the_torch_twins_own_draws_are_standard_normal() -> None:
    # what a node without a compiler (or WALKING_NOISE_RNG=torch, or a GPU) draws, tested on its own rather than
    # only through its bit-identity with the C generator
    z = gaussian.philox_normal_torch([987654321, 2**63 + 5], (3, 0, 1), 500_000).numpy().astype(np.float64)
    for row in z:
        assert abs(row.mean()) < 0.006  # standard error 0.0014
        assert abs(row.var() - 1.0) < 0.01  # standard error 0.002
        assert abs(stats.skew(row)) < 0.02 and abs(stats.kurtosis(row, fisher=False) - 3.0) < 0.05
        assert stats.kstest(row[:100_000], "norm").pvalue > 1e-3
        assert abs(np.mean(np.abs(row) > 3.0) - 2 * stats.norm.sf(3.0)) < 0.0006
    assert abs(np.corrcoef(z)[0, 1]) < 0.01


def test_keep_freed_memory_is_idempotent() -> None:
    first = keep_freed_memory()
    assert keep_freed_memory() == first
    if platform.libc_ver()[0] == "glibc":
        assert first  # glibc: the setting takes effect
