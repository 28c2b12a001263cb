"""The counter-based Gaussian generator: Philox known answers, distribution, independence, the layout of the
draws, and the torch twin that must give bit-identical numbers (GPU, no compiler, WALKING_NOISE_RNG=torch)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

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


# Draws recorded from _gaussian.c as of 59254db (before the vector path): SHA-256 of the (K, n) float32 array's
# little-endian bytes, and the first three draws of the last row. Stored runs were computed with these numbers.
RECORDED = [
    (([0], (0, 0, 0), 1, None),
     "7068e6dbcafe889d8b2fa3dc1dd1679f4785bef71bc3f02fd53ab0969c590b57", ["0x1.fb765ep-1"]),
    (([1, 2**64 - 1, 2**63 + 12345], (9, 8, 0xFFFFFFFF), 1000, None),
     "523acbc62e07a68a71d8ab9133279c080b889a930157eaab1ab2e5d478bc7be5",
     ["0x1.a2093cp-3", "0x1.9b2384p-1", "0x1.7c3004p-1"]),
    (([42, 43, 44], (1, 2, 3), 70_001, [True, False, True]),
     "6df02723c159e4bc2139dafd92575905b7b1a256b31717cc5b8b51d211b75c41",
     ["0x1.879decp-1", "0x1.19245ap-2", "0x1.073eeep-2"]),
    (([2024], (5, 0, 7), 256 * 1000 + 17, None),
     "8784ece70cdad8f193b64ba84c2eb194650d4aa211c6698ccf70cb124bf43be0",
     ["0x1.055214p+0", "-0x1.88f0b6p+0", "0x1.8073bep+0"]),
    (([0xDEADBEEFCAFEF00D, 7], (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), 255, [False, True]),
     "47b3811ea604ea85ad613d77c82aeed89b1379185b5ace7c6ef13dece505bfc8",
     ["0x1.62624cp-2", "-0x1.d098a4p-2", "-0x1.e05dc8p-1"]),
]


@pytest.fixture(scope="module")
def reference_build(tmp_path_factory) -> ctypes.CDLL:
    """The generator built with -DWN_NO_SIMD: the plain C reference path the torch twin mirrors."""
    if gaussian._load() is None:
        pytest.skip("no compiled generator")
    return gaussian.compile_generator(tmp_path_factory.mktemp("reference") / "reference.so",
                                      extra_flags=("-DWN_NO_SIMD",))


@pytest.mark.parametrize("implementation", ["compiled", "reference build", "torch twin"])
@pytest.mark.parametrize("case", range(len(RECORDED)))
def test_draws_are_those_recorded_before_the_vector_path(implementation: str, case: int, request) -> None:
    (keys, counter, n, active), digest, head = RECORDED[case]
    if implementation == "compiled":
        if gaussian.backend() != "fast":
            pytest.skip("no compiled generator")
        z = gaussian.philox_normal(keys, counter, n, active=active)
    elif implementation == "reference build":
        z = gaussian.philox_normal_compiled(request.getfixturevalue("reference_build"), keys, counter, n, active)
    else:
        z = torch.zeros(len(keys), n)
        rows = [m for m in range(len(keys)) if active is None or active[m]]
        z[rows] = gaussian.philox_normal_torch([keys[m] for m in rows], counter, n)
    assert z[-1, :len(head)].tolist() == [float.fromhex(h) for h in head]
    assert hashlib.sha256(z.numpy().astype("<f4").tobytes()).hexdigest() == digest


@needs_compiler
def test_the_cached_build_uses_the_vector_path_where_the_cpu_has_avx2() -> None:
    if "avx2" not in _cpu_flags():
        pytest.skip("no AVX2 on this CPU")
    assert gaussian.simd_lanes() in (8, 16)


@pytest.mark.parametrize("n", [1, 255, 256, 257, 4097, 100_003])
def test_the_reference_build_gives_the_vector_builds_draws(reference_build: ctypes.CDLL, n: int) -> None:
    assert reference_build.wn_lanes_per_vector() == 1
    keys = [5, 2**64 - 2, 2**40 + 3]
    for active in (None, [True, False, True]):
        fast = gaussian.philox_normal(keys, (7, 0, 2**31), n, active=active)
        assert torch.equal(gaussian.philox_normal_compiled(reference_build, keys, (7, 0, 2**31), n, active), fast)


@needs_compiler
def test_the_avx512_path_compiles_and_where_the_cpu_has_it_gives_the_same_draws(tmp_path) -> None:
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    if subprocess.run([os.environ.get("CC", "cc"), "-mavx512f", str(probe), "-o", str(tmp_path / "probe")],
                      capture_output=True).returncode != 0:
        pytest.skip("the C compiler does not accept -mavx512f")
    lib = gaussian.compile_generator(tmp_path / "avx512.so", extra_flags=("-mavx512f",))
    assert lib.wn_lanes_per_vector() == 16  # a constant return: safe to call on any x86-64 CPU
    if "avx512f" in _cpu_flags():
        keys = [3, 2**63 + 1]
        assert torch.equal(gaussian.philox_normal_compiled(lib, keys, (1, 2, 3), 70_001),
                           gaussian.philox_normal(keys, (1, 2, 3), 70_001))


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()}
