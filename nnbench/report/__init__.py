"""The report: benchmarks, verification and accuracy rendered into ``reports/REPORT.md``.

Pipeline (each step a module):

* ``load``    find and validate the result files (pytest-benchmark runs, accuracy results);
* ``verify``  check every backend against the float64 torch reference, on the spot;
* ``tables``  derive every number shown (GFLOP/s, % of peak, speed-ups, times to accuracy);
* ``plots``   draw the figures (PNG bytes);
* ``render``  assemble REPORT.md in memory, then ``publish`` writes each file atomically.

``build`` runs the pipeline; ``python -m nnbench.report`` is its command line.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nnbench.report import load
from nnbench.report.load import ReportError, ResultFileError

#: Timed calls per measurement in the quick embedded set (plus a warm-up, a check and a memory
#: call each): its medians are a first look, the full suite (``tox -e bench``) the real numbers.
QUICK_REPEATS = 3
#: Largest kernel of the quick set's kernel-size sweep. At k = 11 the loop backend alone needs
#: about a minute on 2 cores, which breaks the two-minute budget; k = 3 and 7 still show the
#: FFT crossover the issue names (k >= 7).
QUICK_MAX_KERNEL = 7


def quick_cases() -> list:
    """``nnbench.bench.quick_cases()`` without the sweep's kernels above ``QUICK_MAX_KERNEL``."""
    from nnbench import bench

    return [
        case
        for case in bench.quick_cases()
        if case.suite != "kernel_size" or case.kernel_shape[2] <= QUICK_MAX_KERNEL
    ]


__all__ = [
    "QUICK_MAX_KERNEL",
    "QUICK_REPEATS",
    "BuildResult",
    "ReportError",
    "ResultFileError",
    "build",
    "quick_benchmark_run",
    "quick_cases",
]


@dataclass
class BuildResult:
    written: list[Path]  # the files put in place, REPORT.md last
    missing: list[str]  # what the report says is missing, and how to produce it


def quick_benchmark_run(
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    **run_quick_options,
) -> tuple[load.BenchmarkRun, float]:
    """Time the quick embedded set (``nnbench.bench.run_quick``); (the run, seconds taken)."""
    from nnbench import bench
    from nnbench.machine import machine_info

    start = time.perf_counter()
    run_quick_options.setdefault("repeats", QUICK_REPEATS)
    if run_quick_options.get("cases") is None:
        run_quick_options["cases"] = quick_cases()
    try:
        records = bench.run_quick(threads=threads, progress=progress, **run_quick_options)
    except (AssertionError, ValueError, TypeError, bench.Unsupported) as exc:
        # A backend that computes wrong results fails its check here: say so, write nothing.
        raise ReportError(f"the quick benchmark run failed: {type(exc).__name__}: {exc}") from exc
    seconds = time.perf_counter() - start
    payload = {
        "machine_info": machine_info(),
        "commit_info": _commit_info(),
        "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "version": load.QUICK_VERSION,
        "benchmarks": records,
    }
    return load.benchmark_run(payload, run_id=load.QUICK_NAME, quick=True), seconds


def _commit_info() -> dict:
    """The git commit the code was at, as pytest-benchmark records it (empty if unknown)."""
    try:
        from pytest_benchmark.utils import get_commit_info
    except ImportError:
        return {}
    try:
        return dict(get_commit_info())
    except Exception:  # noqa: BLE001 - a missing git is no reason to lose a report
        return {}


def build(
    results: list[str | os.PathLike] | None = None,
    out: str | os.PathLike = "reports",
    *,
    quick: bool = False,
    no_run: bool = False,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    benchmark_storage: str | os.PathLike = load.DEFAULT_BENCHMARK_STORAGE,
    results_dir: str | os.PathLike = load.DEFAULT_RESULTS_DIR,
    run_quick_options: dict | None = None,
    verify_cases: tuple | None = None,
) -> BuildResult:
    """Collect, compute what is missing (unless ``no_run``), render, then publish into ``out``.

    Benchmarks: the runs in ``results`` (default: the newest saved run); ``quick`` or no run at
    all -> the quick embedded set is timed (with ``no_run``, an earlier quick run kept in
    ``out`` is reused instead). Verification: computed now (on ``verify_cases``, default
    ``verify.CASES``), or with ``no_run`` the one kept in ``out``. Any unreadable input raises
    ``ResultFileError`` before anything is written.
    """
    from nnbench.machine import machine_info
    from nnbench.report.load import QUICK_NAME, VERIFICATION_NAME
    from nnbench.report.render import Material, publish, render

    if quick and no_run:
        raise ReportError("--quick runs the quick benchmark set; --no-run forbids it: pick one")
    out = Path(out)
    inputs = load.collect(results, benchmark_storage=benchmark_storage, results_dir=results_dir)
    quick_seconds = None
    if quick or (not inputs.benchmark_runs and not no_run):
        if progress is not None:
            progress(
                "no saved benchmark run: timing the quick embedded set"
                if not quick
                else "timing the quick embedded benchmark set"
            )
        run, quick_seconds = quick_benchmark_run(threads, progress, **(run_quick_options or {}))
        inputs.benchmark_runs = [run]
    elif not inputs.benchmark_runs and (out / QUICK_NAME).is_file():
        previous = load.load_file(out / QUICK_NAME)
        if isinstance(previous, load.BenchmarkRun):
            previous.quick = True
            inputs.benchmark_runs = [previous]
    verification = inputs.verification
    if verification is None and not no_run:
        from nnbench.report import verify

        if progress is not None:
            progress("verifying every backend against the float64 torch reference")
        cases = verify.CASES if verify_cases is None else tuple(verify_cases)
        verification = verify.run(cases=cases).payload(machine_info())
    elif verification is None and (out / VERIFICATION_NAME).is_file():
        stored = load.load_file(out / VERIFICATION_NAME)
        verification = stored if isinstance(stored, dict) else None
    material = Material(
        inputs=inputs,
        verification=verification,
        quick_seconds=quick_seconds,
        no_run=no_run,
        machine=machine_info(),
    )
    rendered = render(material)
    written = publish(rendered.files, out)
    return BuildResult(written=written, missing=rendered.missing)
