"""The report: benchmarks, verification and accuracy rendered into ``reports/REPORT.md``.

Pipeline (each step a module):

* ``load``        find and validate the result files (pytest-benchmark runs, accuracy results);
* ``verify``      the verification matrix, every backend against the float64 reference, now;
* ``provenance``  machines, thread counts, BLAS kernels, and whether the code changed since;
* ``tables``      derive every number shown (GFLOP/s, % of peak, speed-ups, times to accuracy);
* ``metrics``     the speed metrics of ``nnbench.policy``, judged per machine and thread count;
* ``plots``       draw the figures;
* ``render``      assemble REPORT.md in memory (its sections in ``sections``), then
                  ``publish`` writes each file atomically.

``build`` runs the pipeline; ``python -m nnbench.report`` is its command line.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nnbench.report import load
from nnbench.report.load import ReportError, ResultFileError

#: Seconds of timed rounds per benchmark in the quick set (the suite's ``--bench-budget``;
#: its default is meant for the full suite): a first look, the full suite the real numbers.
QUICK_BUDGET = 0.2
#: The pytest marker of the quick set in ``tests/benchmarks``.
QUICK_MARKER = "quick"

__all__ = [
    "QUICK_BUDGET",
    "QUICK_MARKER",
    "BuildResult",
    "ReportError",
    "ResultFileError",
    "build",
    "quick_benchmark_run",
]


@dataclass
class BuildResult:
    written: list[Path]  # the files put in place, REPORT.md last
    missing: list[str]  # what the report says is missing, and how to produce it
    failures: dict[str, list[str]]  # backend -> what failed (empty: every check passed)


def quick_benchmark_run(
    threads: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    keyword: str | None = None,
    budget: float = QUICK_BUDGET,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the quick set of the benchmark suite (``-m quick``, optionally ``-k keyword``)
    through pytest-benchmark (``nnbench.bench.run_suite``) and return its JSON payload, with
    how it was run, how long it took and pytest's exit code under ``load.QUICK_KEY``.

    A benchmark whose check failed is in the payload with its failed verdict (the report marks
    it); ``ReportError`` only when the run left no results at all. pytest's own output (stdout
    and stderr) goes to ``log`` (one call with all of it; default: dropped), so that only the
    progress shows; its FAILED and ERROR summary lines are kept in the payload.
    """
    import contextlib
    import io

    from nnbench import bench

    start = time.perf_counter()
    output = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="nnbench-quick-") as folder:
        path = Path(folder) / "quick.json"
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = bench.run_suite(
                path,
                marker=QUICK_MARKER,
                keyword=keyword,
                threads=threads,
                budget=budget,
                progress=progress,
            )
        if log is not None:
            log(output.getvalue())
        if not path.is_file():
            tail = "\n".join(output.getvalue().strip().splitlines()[-15:])
            raise ReportError(
                f"the quick benchmark run wrote no results (pytest exit code {code})"
                + (f"; its last output:\n{tail}" if tail else "")
            )
        payload = load.read_json(path)
    payload[load.QUICK_KEY] = {
        "marker": QUICK_MARKER,
        "keyword": keyword,
        "budget_seconds": budget,
        "threads_requested": threads,
        "seconds": time.perf_counter() - start,
        "pytest_exit_code": int(code),
        "tests": len(payload.get("benchmarks", [])),
        "pytest_summary": [
            line.strip()
            for line in output.getvalue().splitlines()
            if line.startswith(("FAILED ", "ERROR "))
        ],
    }
    return payload


def build(
    results: list[str | os.PathLike] | None = None,
    out: str | os.PathLike = "reports",
    *,
    quick: bool = False,
    no_run: bool = False,
    threads: int | None = None,
    say: Callable[[str], None] | None = None,
    bench_progress: Callable[[int, int, str], None] | None = None,
    benchmark_storage: str | os.PathLike = load.DEFAULT_BENCHMARK_STORAGE,
    results_dir: str | os.PathLike = load.DEFAULT_RESULTS_DIR,
    quick_options: dict | None = None,
    verify_cases: tuple | None = None,
) -> BuildResult:
    """Collect, compute what is missing (unless ``no_run``), render, then publish into ``out``.

    Benchmarks: the runs in ``results`` (default: the newest saved run); ``quick`` or no run at
    all -> the quick set is timed (with ``no_run``, an earlier quick run kept in ``out`` is
    reused instead). Verification: computed now (on ``verify_cases``, default
    ``nnbench.verify.CHECK_CASES``); with ``no_run``, one found among the inputs or kept in
    ``out`` (the verification of an older schema is noted and left out). Any unreadable
    input raises ``ResultFileError`` before anything is written. ``say`` gets one line per step,
    ``bench_progress(done, total, test id)`` follows the quick run.
    """
    from nnbench.machine import machine_info
    from nnbench.report import verify
    from nnbench.report.load import QUICK_NAME, VERIFICATION_NAME
    from nnbench.report.render import Material, publish, render
    from nnbench.verify import CHECK_CASES

    say = say or (lambda text: None)
    if quick and no_run:
        raise ReportError("--quick runs the quick benchmark set; --no-run forbids it: pick one")
    out = Path(out)
    inputs = load.collect(results, benchmark_storage=benchmark_storage, results_dir=results_dir)
    quick_payload = None
    if quick or (not inputs.benchmark_runs and not no_run):
        say(
            "timing the quick benchmark set (pytest-benchmark, -m quick)"
            if quick
            else "no saved benchmark run: timing the quick benchmark set (pytest-benchmark, -m quick)"
        )
        quick_payload = quick_benchmark_run(threads, bench_progress, **(quick_options or {}))
        inputs.benchmark_runs = [load.benchmark_run(quick_payload, run_id=QUICK_NAME)]
    elif not inputs.benchmark_runs and (out / QUICK_NAME).is_file():
        previous = load.load_file(out / QUICK_NAME)
        if isinstance(previous, load.BenchmarkRun):
            inputs.benchmark_runs = [previous]
    verification = inputs.verification  # only used with --no-run: otherwise computed now
    if not no_run:
        say("verifying every backend against the float64 torch reference")
        cases = CHECK_CASES if verify_cases is None else tuple(verify_cases)
        verification = verify.run(cases=cases, machine=machine_info())
    elif verification is None and (out / VERIFICATION_NAME).is_file():
        try:
            stored = load.load_file(out / VERIFICATION_NAME)
        except load.StaleResultError as exc:
            inputs.notes.append(f"not used: {exc}")
        else:
            verification = stored if isinstance(stored, dict) else None
    material = Material(
        inputs=inputs,
        verification=verification,
        quick_payload=quick_payload,
        no_run=no_run,
        machine=machine_info(),
    )
    rendered = render(material)
    written = publish(rendered.files, out)
    return BuildResult(written=written, missing=rendered.missing, failures=rendered.failures)


def payload_bytes(payload: object) -> bytes:
    return (json.dumps(payload, indent=2, default=str) + "\n").encode("utf-8")
