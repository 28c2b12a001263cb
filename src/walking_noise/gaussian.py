"""Standard normal draws for the injected noise: counter-based, so every run owns its random numbers.

Why counter-based: a draw is a pure function of (member key, draw coordinate, element index), computed by
Philox4x32-10 (Salmon et al. 2011, the generator of cuRAND and of torch on GPUs) followed by a Box-Muller
transform. So the noise one run sees does not depend on which other runs share its batch, on their order, on how
many draws happened before, or on the engine (one model, packed, train-once-evaluate-many, SEML, job array): only
on the run's own config (its key) and on where in training the draw happens (its coordinate, see
:class:`walking_noise.noise.NoiseStream`).

Two implementations give bit-identical float32 draws (tested):

- ``_gaussian.c``, compiled at first use with the machine's C compiler (``-O3 -march=native -ffp-contract=off``),
  cached under ``~/.cache/walking_noise`` (or ``$WALKING_NOISE_CACHE``) per CPU-flags hash and loaded with ctypes:
  the fast path for float32 CPU tensors. It holds a plain C reference and an AVX2 / AVX-512 vector path that gives
  the same bits (:func:`simd_lanes` says which one a build uses);
- :func:`philox_normal_torch`, the same arithmetic as torch tensor operations, one IEEE operation at a time: used on
  GPUs, where no compiler works, and with ``WALKING_NOISE_RNG=torch``. It is several times slower on the CPU
  (``benchmarks/generator_rate.py`` prints both rates, per core).

The radius uses 31 random bits, so |z| <= sqrt(-2 ln 2^-32) = 6.66.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

SOURCE = Path(__file__).with_name("_gaussian.c")
BACKEND_ENV = "WALKING_NOISE_RNG"  # "fast" (default) or "torch"
CACHE_ENV = "WALKING_NOISE_CACHE"  # where the compiled generator is kept (default ~/.cache/walking_noise)
CFLAGS = ("-O3", "-fno-math-errno", "-ffp-contract=off")  # no FMA contraction: the torch twin rounds each op
MASK32 = 0xFFFFFFFF
LANES = 64  # counters per chunk; a chunk holds 4 * LANES draws (the element layout of _gaussian.c, its L)
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False


def _cpu_signature() -> str:
    """What the compiled code depends on: the CPU's model and instruction-set flags (nodes of a cluster differ)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [line for line in info.splitlines() if line.startswith(("flags", "model name", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                     "walking_noise")
    return Path(base)


def _compile(target: Path, source: Path = SOURCE, extra_flags: Sequence[str] = ()) -> None:
    """Build ``target`` atomically (parallel workers may race; the loser's rename is harmless)."""
    compiler = os.environ.get("CC", "cc")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        errors = []
        for flags in (["-march=native"], []):
            cmd = [compiler, *CFLAGS, *flags, *extra_flags, "-fPIC", "-shared", str(source), "-o", str(out)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True)
            except OSError as err:  # no such compiler
                raise RuntimeError(f"{compiler}: {err}") from err
            if proc.returncode == 0:
                os.replace(out, target)
                return
            errors.append(f"{' '.join(cmd)}: {proc.stderr.strip()[-500:]}")
        raise RuntimeError("; ".join(errors))


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C signatures of a loaded generator library."""
    lib.wn_philox_normal.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32]
    lib.wn_philox_normal.restype = None
    lib.wn_philox4x32_10.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.wn_philox4x32_10.restype = None
    if hasattr(lib, "wn_lanes_per_vector"):  # absent from builds of older sources (benchmarks compare them)
        lib.wn_lanes_per_vector.argtypes = []
        lib.wn_lanes_per_vector.restype = ctypes.c_int32
    return lib


def compile_generator(target: Path, source: Path = SOURCE, extra_flags: Sequence[str] = ()) -> ctypes.CDLL:
    """Build the C generator from ``source`` into the shared library ``target`` (flags as for the cached build, plus
    ``extra_flags``) and load it: for comparing builds, e.g. the reference path (``-DWN_NO_SIMD``) with the vector
    path in the tests, or an older version of the source in ``benchmarks/generator_rate.py``. Raises RuntimeError
    with the compiler's message when no build succeeds."""
    _compile(target, source, extra_flags)
    return _bind(ctypes.CDLL(str(target)))


def _load() -> ctypes.CDLL | None:
    global _library, _tried
    if _tried:
        return _library
    with _lock:
        if _tried:
            return _library
        try:
            key = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()
                                 + _cpu_signature().encode()).hexdigest()[:16]
            target = _cache_dir() / f"gaussian-{key}.so"
            if not target.exists():
                try:
                    _compile(target)
                except PermissionError:
                    target = Path(tempfile.gettempdir()) / "walking_noise" / target.name
                    if not target.exists():
                        _compile(target)
            _library = _bind(ctypes.CDLL(str(target)))
        except (OSError, RuntimeError) as err:
            warnings.warn(f"walking_noise: the compiled CPU Gaussian generator is unavailable ({err}); noise is "
                          f"drawn by its torch twin (the same numbers, slower on the CPU)", RuntimeWarning,
                          stacklevel=3)
        _tried = True
    return _library


def backend() -> str:
    """``"fast"`` when CPU draws use the compiled generator, else ``"torch"`` (the twin)."""
    if os.environ.get(BACKEND_ENV, "fast") == "torch":
        return "torch"
    return "fast" if (_library if _tried else _load()) is not None else "torch"


# ---- the torch twin ----------------------------------------------------------------------------------------


def _philox_rounds(x: list[torch.Tensor], k0: torch.Tensor, k1: torch.Tensor) -> list[torch.Tensor]:
    """Philox4x32-10 on int64 tensors holding uint32 words (products wrap modulo 2^64; their bits are exact)."""
    x0, x1, x2, x3 = x
    for r in range(10):
        a = (k0 + r * _PHILOX_W[0]) & MASK32
        b = (k1 + r * _PHILOX_W[1]) & MASK32
        p0, p1 = x0 * _PHILOX_M[0], x2 * _PHILOX_M[1]
        y0 = ((p1 >> 32) & MASK32) ^ x1 ^ a
        y2 = ((p0 >> 32) & MASK32) ^ x3 ^ b
        x0, x1, x2, x3 = y0, p1 & MASK32, y2, p0 & MASK32
    return [x0, x1, x2, x3]


_F = float.fromhex
_LOG_POLY = tuple(_F(h) for h in ("0x1.204376p-4", "-0x1.d7a37p-4", "0x1.de4a34p-4", "-0x1.fcba9ep-4", "0x1.23d37ep-3",
                                  "-0x1.555ca0p-3", "0x1.999d58p-3", "-0x1.fffff8p-3", "0x1.555554p-2"))


def _ln01(x: torch.Tensor) -> torch.Tensor:
    """ln(x) for float32 x in (0, 1], operation for operation as ``ln01`` in ``_gaussian.c``."""
    bits = x.view(torch.int32)
    e = ((bits >> 23) & 0xFF) - 126
    m = ((bits & 0x007FFFFF) | 0x3F000000).view(torch.float32)
    small = m < _F("0x1.6a09e6p-1")
    e = e - small.to(torch.int32)
    m = torch.where(small, (m + m) - 1.0, m - 1.0)
    z = m * m
    y = torch.full_like(m, _LOG_POLY[0])
    for c in _LOG_POLY[1:]:
        y = y * m + c
    y = (y * m) * z
    fe = e.to(torch.float32)
    y = y + fe * _F("-0x1.bd0106p-13")
    y = y + z * -0.5
    return (m + y) + fe * _F("0x1.63p-1")


def _box_muller(u_bits: torch.Tensor, v_bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_cos, z_sin) from two tensors of uint32 words, as ``box_muller`` in ``_gaussian.c``."""
    u = (u_bits >> 1).to(torch.int32).to(torch.float32) * _F("0x1p-31") + _F("0x1p-32")
    v = (v_bits >> 8).to(torch.int32).to(torch.float32) * _F("0x1p-22")
    q = (v + 0.5).to(torch.int32)
    f = (v - q.to(torch.float32)) * _F("0x1.921fb6p+0")
    z = f * f
    s = f + (f * z) * ((z * _F("-0x1.9943f2p-13") + _F("0x1.11073cp-7")) * z - _F("0x1.555546p-3"))
    c = (1.0 - z * 0.5) + (z * z) * ((z * _F("0x1.99eb9cp-16") - _F("0x1.6c0c34p-10")) * z + _F("0x1.55554ap-5"))
    q = q & 3
    sin_t = torch.where(q == 0, s, torch.where(q == 1, c, torch.where(q == 2, -s, -c)))
    cos_t = torch.where(q == 0, c, torch.where(q == 1, -s, torch.where(q == 2, -c, s)))
    # float64 sqrt rounded to float32 is the correctly rounded float32 sqrt (C's sqrtf); torch's vectorised float32
    # sqrt on the CPU is not always (measured: about 1 result in 10^3 differs by an ulp)
    radius = torch.sqrt((_ln01(u) * -2.0).to(torch.float64)).to(torch.float32)
    return radius * cos_t, radius * sin_t


def philox_normal_torch(keys: Sequence[int], counter: tuple[int, int, int], n: int,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """(K, n) float32 draws of :func:`philox_normal` computed with torch operations on ``device``."""
    device = torch.device(device)
    chunks = -(-n // (4 * LANES))
    signed = [(int(k) & (2**64 - 1)) - (2**64 if int(k) & 2**63 else 0) for k in keys]  # the same 64 bits
    key = torch.tensor(signed, dtype=torch.int64, device=device).view(-1, 1, 1)
    k0, k1 = key & MASK32, (key >> 32) & MASK32
    block = torch.arange(chunks * LANES, dtype=torch.int64, device=device).view(1, chunks, LANES)
    words = [block.expand(len(keys), -1, -1)] + [torch.full_like(block, int(c) & MASK32) for c in counter]
    r = _philox_rounds(words, k0, k1)
    z0, z1 = _box_muller(r[0], r[1])
    z2, z3 = _box_muller(r[2], r[3])
    return torch.stack([z0, z2, z1, z3], dim=2).reshape(len(keys), chunks * 4 * LANES)[:, :n].contiguous()


# ---- the public functions ----------------------------------------------------------------------------------


def key_array(keys: Sequence[int]) -> np.ndarray:
    """Member keys as the uint64 array :func:`philox_normal` takes without converting (streams keep one)."""
    return np.asarray([int(k) & (2**64 - 1) for k in keys], dtype=np.uint64)


def philox_normal(keys: Sequence[int] | np.ndarray, counter: tuple[int, int, int], n: int, *,
                  device: torch.device | str = "cpu", active: Sequence[bool] | None = None) -> torch.Tensor:
    """(K, n) independent N(0, 1) float32 draws: row m is stream ``keys[m]`` at ``counter``, elements 0..n-1.

    ``keys`` are 64-bit integers (one per member; a :func:`key_array` is used as it is), ``counter`` three 32-bit
    words saying where in a run the draw happens. Rows of members with ``active[m]`` false are zeros (not drawn).
    The same arguments give the same numbers on every device and backend.
    """
    if n >= 2**36:
        raise ValueError(f"{n} draws per member exceed the generator's 2^36 counter range")
    keys = keys if isinstance(keys, np.ndarray) else key_array(keys)
    K = len(keys)
    if (device == "cpu" or torch.device(device).type == "cpu") and backend() == "fast":
        return philox_normal_compiled(_library, keys, counter, n, active)  # type: ignore[arg-type]
    key_list = [int(k) for k in keys]
    if active is None or all(active):
        return philox_normal_torch(key_list, counter, n, device)
    out = torch.zeros(K, n, dtype=torch.float32, device=device)
    chosen = [m for m in range(K) if active[m]]
    if chosen:
        out[torch.tensor(chosen, device=device)] = philox_normal_torch([key_list[m] for m in chosen], counter, n,
                                                                       device)
    return out


def philox_normal_compiled(library: ctypes.CDLL, keys: Sequence[int] | np.ndarray, counter: tuple[int, int, int],
                           n: int, active: Sequence[bool] | None = None) -> torch.Tensor:
    """:func:`philox_normal` on the CPU by a given compiled ``library`` (the cached one, or a
    :func:`compile_generator` build): the same (K, n) float32 draws from every build."""
    keys = keys if isinstance(keys, np.ndarray) else key_array(keys)
    out = torch.empty(len(keys), n, dtype=torch.float32)
    flags = None if active is None else np.asarray(active, dtype=np.uint8)
    library.wn_philox_normal(out.data_ptr(), n, len(keys), keys.ctypes.data,
                             None if flags is None else flags.ctypes.data,
                             counter[0] & MASK32, counter[1] & MASK32, counter[2] & MASK32)
    return out


def simd_lanes() -> int:
    """Float lanes per vector of the compiled generator in use: 16 (AVX-512), 8 (AVX2), 1 (the plain C reference),
    0 when draws come from the torch twin."""
    lib = _load() if backend() == "fast" else None
    return int(lib.wn_lanes_per_vector()) if lib is not None else 0


def philox4x32_10(counter: Sequence[int], key: Sequence[int], implementation: str = "c") -> tuple[int, ...]:
    """One raw Philox4x32-10 block (four uint32 words) by ``implementation`` ``"c"`` or ``"torch"``: the
    known-answer check of both."""
    if implementation == "c":
        lib = _load()
        if lib is None:
            raise RuntimeError("the compiled generator is unavailable")
        ctr, k, out = (ctypes.c_uint32 * 4)(*counter), (ctypes.c_uint32 * 2)(*key), (ctypes.c_uint32 * 4)()
        lib.wn_philox4x32_10(ctr, k, out)
        return tuple(out)
    words = [torch.tensor([int(c) & MASK32], dtype=torch.int64) for c in counter]
    r = _philox_rounds(words, torch.tensor(int(key[0])), torch.tensor(int(key[1])))
    return tuple(int(w) for w in r)


def standard_normal_like(x: torch.Tensor) -> torch.Tensor:
    """A tensor like ``x`` of fresh N(0, 1) draws keyed by 64 bits of torch's default generator (so
    ``torch.manual_seed`` makes them repeatable): for noise outside a run's own stream, e.g. a model used directly."""
    key = int(torch.randint(0, 2**63 - 1, (1,)).item())
    z = philox_normal([key], (0, 0, 0), x.numel(), device=x.device)
    return z.view(x.shape).to(x.dtype)
