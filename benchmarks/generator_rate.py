"""Rate of the noise generator, per core: the compiled C path against an older version of its source and against
the torch twin, printed as ratios measured in one run.

    .venv/bin/python benchmarks/generator_rate.py [--old 59254db] [--sizes 1e4,1e5,1e6,1e7] [--members 1,8]

For every size (draws per call, all members together, so a member draws size / K) and member count K, the script
times ``gaussian.philox_normal_compiled`` with the build of the working tree's ``_gaussian.c`` (``new``), with a
build of the same file at git revision ``--old`` (``old``; compiled with the same flags into a temporary
directory), and ``gaussian.philox_normal_torch`` (``twin``). It checks that the three give the same bits, then
calls them in turn, ``--repeats`` rounds, and keeps each one's best time (the machine may be shared: the best of
alternating calls is the least disturbed). Rates are in 10^9 normals per second on one thread
(``torch.set_num_threads(1)``; the C generator is single-threaded by design: one core per training process).

``--fma`` adds a prototype that is not a candidate for the default: the same source compiled with FMA contraction
(``-ffp-contract=fast``: each polynomial step's multiply and add fused into one rounding). Its numbers differ from
the stored ones in the last bits, and no torch operation reproduces them on every device; the rows show what the
no-FMA rule costs, and a tail check (draws beyond 3, 4, 5 standard deviations and the largest |z| over
``--tail-draws`` draws, against the normal distribution's expectations) shows that it keeps the distribution.
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from walking_noise import gaussian

ROOT = Path(__file__).resolve().parents[1]
COUNTER = (3, 1, 4)


def old_build(revision: str, directory: Path) -> ctypes.CDLL:
    """The generator compiled from ``src/walking_noise/_gaussian.c`` as of git ``revision``."""
    source = directory / "_gaussian_old.c"
    text = subprocess.run(["git", "show", f"{revision}:src/walking_noise/_gaussian.c"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    source.write_text(text)
    return gaussian.compile_generator(directory / "gaussian_old.so", source=source)


def tail_check(library: ctypes.CDLL, draws: int, block: int = 10_000_000) -> dict[str, float]:
    """Fractions of ``draws`` draws of one key beyond 3, 4, 5 and the largest |z|, counted block by block."""
    counts, largest, done = np.zeros(3), 0.0, 0
    for index in range(-(-draws // block)):
        z = gaussian.philox_normal_compiled(library, [12345], (index, 0, 9), min(block, draws - done))[0].abs()
        counts += [int((z > limit).sum()) for limit in (3.0, 4.0, 5.0)]
        largest = max(largest, float(z.max()))
        done += len(z)
    return {**{f"> {limit}": c / done for limit, c in zip((3, 4, 5), counts)}, "max |z|": largest}


def print_tail_checks(builds: dict[str, ctypes.CDLL], draws: int) -> None:
    """The tail check of each build beside the normal distribution's tail masses (and their standard errors)."""
    print(f"\ntails over {draws:.0e} draws (fraction of |z| above the limit; normal: expected +- standard error)")
    expected = {f"> {limit}": 2 * stats.norm.sf(limit) for limit in (3, 4, 5)}
    rows = {name: tail_check(lib, draws) for name, lib in builds.items()}
    for column in [*expected, "max |z|"]:
        cells = "".join(f"{name} {row[column]:.3e}   " for name, row in rows.items())
        normal = (f"normal {expected[column]:.3e} +- {np.sqrt(expected[column] * (1 - expected[column]) / draws):.1e}"
                  if column in expected else "bound of the 31-bit radius 6.660")
        print(f"  {column:<8} {cells}{normal}")


def best_seconds(calls: dict[str, Callable[[], torch.Tensor]], repeats: int, budget_s: float) -> dict[str, float]:
    """Best wall time of each call over ``repeats`` alternating rounds (fewer when a round passes ``budget_s``)."""
    best = {name: float("inf") for name in calls}
    for fn in calls.values():
        fn()  # warm-up: first-touch allocations
    started = time.perf_counter()
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
        if time.perf_counter() - started > budget_s:
            break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="59254db", help="git revision of the _gaussian.c to compare with")
    parser.add_argument("--sizes", default="1e4,1e5,1e6,1e7", help="draws per call (all members), comma-separated")
    parser.add_argument("--members", default="1,8", help="member counts K, comma-separated")
    parser.add_argument("--repeats", type=int, default=50, help="alternating rounds per cell (at most)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per cell before rounds stop early")
    parser.add_argument("--no-twin", action="store_true", help="skip the torch twin (slow at 1e7)")
    parser.add_argument("--fma", action="store_true", help="add the FMA-contracted prototype and the tail check")
    parser.add_argument("--tail-draws", type=float, default=1e8, help="draws per build in the tail check")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    members = [int(k) for k in args.members.split(",")]
    new = gaussian._load()
    if new is None:
        raise SystemExit("the compiled generator is unavailable (see the warning above): nothing to time")
    with tempfile.TemporaryDirectory() as tmp:
        old = old_build(args.old, Path(tmp))
        fma = (gaussian.compile_generator(Path(tmp) / "gaussian_fma.so", extra_flags=("-ffp-contract=fast",))
               if args.fma else None)
        print(f"generator rate, 1 thread, 10^9 normals/s; new: this tree ({gaussian.simd_lanes()} float lanes per "
              f"vector), old: _gaussian.c at {args.old}, twin: philox_normal_torch")
        print(f"{'size':>10}{'K':>4}{'old':>8}{'new':>8}{'new/old':>9}{'twin':>8}{'new/twin':>10}"
              + (f"{'fma':>8}{'fma/new':>9}{'differ':>8}" if fma else ""))
        for size in sizes:
            for k in members:
                n = size // k
                keys = gaussian.key_array(range(1000, 1000 + k))
                calls = {"old": lambda: gaussian.philox_normal_compiled(old, keys, COUNTER, n),
                         "new": lambda: gaussian.philox_normal_compiled(new, keys, COUNTER, n)}
                if not args.no_twin:
                    calls["twin"] = lambda: gaussian.philox_normal_torch([int(x) for x in keys], COUNTER, n)
                reference = calls["old"]()
                for name, fn in calls.items():
                    if not torch.equal(fn(), reference):
                        raise SystemExit(f"size {size}, K={k}: {name} draws differ from old's; the builds must "
                                         f"give the same bits (run tests/test_gaussian.py)")
                if fma is not None:
                    calls["fma"] = lambda: gaussian.philox_normal_compiled(fma, keys, COUNTER, n)
                    differ = float((calls["fma"]() != reference).float().mean())
                best = best_seconds(calls, args.repeats, args.budget)
                rate = {name: k * n / s / 1e9 for name, s in best.items()}
                twin = rate.get("twin", np.nan)
                print(f"{size:>10.0e}{k:>4}{rate['old']:>8.3f}{rate['new']:>8.3f}{rate['new'] / rate['old']:>9.2f}"
                      f"{twin:>8.3f}{rate['new'] / twin:>10.1f}"
                      + (f"{rate['fma']:>8.3f}{rate['fma'] / rate['new']:>9.2f}{differ:>8.1%}" if fma else ""))
        if fma is not None:
            print_tail_checks({"new": new, "fma": fma}, int(args.tail_draws))


if __name__ == "__main__":
    main()
