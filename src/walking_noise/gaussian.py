"""Standard normal draws for the injected noise, fast on the CPU.

Why this exists: with noise at every injection point, drawing Gaussians is most of a small network's training
step on a CPU. The MLP with global noise needs 1,178 draws per sample against 0.35 MFLOP of arithmetic, and torch's
CPU ``normal_`` gives about 290 M draws/s on one core, so at 128 members it took half the step
(``benchmarks/batched_throughput.py``). ``_gaussian.c`` (xoshiro128++ streams, one per SIMD lane, and a vectorised
Box-Muller transform) gives about 6x that rate. It is compiled at first use with the machine's C compiler for the
machine's CPU, cached, and loaded with ctypes; where no compiler works, or ``WALKING_NOISE_RNG=torch`` is set, or the
tensor is not a float32 CPU tensor (a GPU's own generator is fast), :func:`standard_normal_like` is
``torch.randn_like``.

Seeding: each call takes 64 bits from torch's default generator, so ``torch.manual_seed`` makes runs repeatable
exactly as with ``torch.randn`` (the draws themselves differ from torch's).
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
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("_gaussian.c")
BACKEND_ENV = "WALKING_NOISE_RNG"  # "fast" (default) or "torch"
CACHE_ENV = "WALKING_NOISE_CACHE"  # where the compiled generator is kept (default ~/.cache/walking_noise)
_SEED_HIGH = 2**63 - 1

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


def _compile(target: Path) -> None:
    """Build ``target`` atomically (parallel workers may race; the loser's rename is harmless)."""
    compiler = os.environ.get("CC", "cc")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        errors = []
        for flags in (["-march=native"], []):
            cmd = [compiler, "-O3", "-fno-math-errno", *flags, "-fPIC", "-shared", str(SOURCE), "-o", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                os.replace(out, target)
                return
            errors.append(f"{' '.join(cmd)}: {proc.stderr.strip()[-500:]}")
        raise RuntimeError("; ".join(errors))


def _load() -> ctypes.CDLL | None:
    global _library, _tried
    if _tried:
        return _library
    with _lock:
        if _tried:
            return _library
        try:
            key = hashlib.sha256(SOURCE.read_bytes() + _cpu_signature().encode()).hexdigest()[:16]
            target = _cache_dir() / f"gaussian-{key}.so"
            if not target.exists():
                try:
                    _compile(target)
                except PermissionError:
                    target = Path(tempfile.gettempdir()) / "walking_noise" / target.name
                    if not target.exists():
                        _compile(target)
            lib = ctypes.CDLL(str(target))
            lib.wn_standard_normal.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64]
            lib.wn_standard_normal.restype = None
            _library = lib
        except (OSError, RuntimeError) as err:
            warnings.warn(f"walking_noise: the fast CPU Gaussian generator is unavailable ({err}); noise is drawn "
                          f"with torch.randn, which is slower on the CPU", RuntimeWarning, stacklevel=3)
        _tried = True
    return _library


def backend() -> str:
    """``"fast"`` when float32 CPU draws use the compiled generator, else ``"torch"``."""
    if os.environ.get(BACKEND_ENV, "fast") == "torch":
        return "torch"
    return "fast" if _load() is not None else "torch"


def standard_normal_like(x: torch.Tensor) -> torch.Tensor:
    """A tensor like ``x`` of independent N(0, 1) draws (fresh on every call)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or backend() != "fast":
        return torch.randn_like(x)
    out = torch.empty_like(x)  # always dense, so its storage is exactly numel() floats
    seed = int(torch.randint(0, _SEED_HIGH, (1,)).item())
    _library.wn_standard_normal(out.data_ptr(), out.numel(), seed)  # type: ignore[union-attr]
    return out
