"""``python -m nnbench.report``: render benchmarks, verification and accuracy into reports/.

Examples::

    python -m nnbench.report                      # latest saved benchmark run + reports/results
    python -m nnbench.report --quick              # time the quick benchmark set first
    python -m nnbench.report --no-run             # render only what exists, run nothing
    python -m nnbench.report --results A.json B.json reports/results --out /tmp/report

Exit status: 0 when every check passed, 1 when a backend failed one (the report is written in
full and says which), 2 on unusable input (nothing is written).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

from nnbench._io import unwritable_reason
from nnbench.report import build
from nnbench.report.load import (
    DEFAULT_BENCHMARK_STORAGE,
    DEFAULT_RESULTS_DIR,
    ReportError,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nnbench.report",
        description="Render REPORT.md and its figures from pytest-benchmark runs, "
        "nnbench.accuracy results and a verification of every backend computed on the spot. "
        "With no saved benchmark run it times the quick benchmark set first (unless --no-run). "
        "Exits 1 if a backend failed a check, 2 on unusable input.",
    )
    parser.add_argument(
        "--results",
        nargs="+",
        metavar="PATH",
        default=None,
        help="benchmark JSON files (pytest-benchmark --benchmark-autosave / --benchmark-json) "
        "and accuracy JSON files, or folders holding them (a folder gives its accuracy-*.json "
        "and its newest other run); runs from different machines or thread counts are shown "
        f"side by side. Default: the newest run in {DEFAULT_BENCHMARK_STORAGE}/ and "
        f"{DEFAULT_RESULTS_DIR}/accuracy-*.json",
    )
    parser.add_argument(
        "--out",
        default="reports",
        metavar="DIR",
        help="where REPORT.md and the PNGs go (default: reports)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="time the quick benchmark set (pytest --benchmark-only -m quick, in-process) "
        "instead of using saved benchmark runs (default: off; on by itself when no saved run is "
        "found)",
    )
    mode.add_argument(
        "--no-run",
        action="store_true",
        help="run nothing (no benchmarks, no verification): render what exists and say what is "
        "missing (default: off)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for the quick benchmark set (default: all cores)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    problem = unwritable_reason(args.out)
    if problem:
        parser.error(f"--out {args.out!r} cannot hold the report: {problem}")
    return args


class ProgressBar:
    """``progress(done, total, test id)`` as a tqdm bar with a count and an estimate of the
    time left, on the stderr of the moment it is made: a duplicate of its file descriptor
    where it has one, so that neither pytest's capture of the benchmarks' output nor the
    report's redirection of pytest's own output swallows it."""

    def __init__(self):
        self.bar = None
        try:
            self.stream = os.fdopen(os.dup(sys.stderr.fileno()), "w")
            self.owned = True
        except (AttributeError, OSError, io.UnsupportedOperation):  # stderr is not a file
            self.stream, self.owned = sys.stderr, False

    def __call__(self, done: int, total: int, test_id: str) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="benchmark", desc="quick set", file=self.stream)
        self.bar.set_postfix_str(test_id[:60], refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.owned and not self.stream.closed:
            self.stream.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    bar = ProgressBar()
    try:
        result = build(
            results=args.results,
            out=args.out,
            quick=args.quick,
            no_run=args.no_run,
            threads=args.threads,
            say=lambda text: print(text, file=sys.stderr, flush=True),
            bench_progress=bar,
        )
    except ReportError as exc:
        print(f"python -m nnbench.report: error: {exc}", file=sys.stderr)
        print("Nothing was written; the previous report (if any) is untouched.", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(f"wrote {Path(args.out) / 'REPORT.md'} and {len(result.written) - 1} other file(s)")
    if result.missing:
        print("missing (see the report's 'What is missing'):")
        for line in result.missing:
            print(f"  - {line}")
    if result.failures:
        print("FAILED (see the report's 'At a glance' and 'Verification'):", file=sys.stderr)
        for backend, reasons in sorted(result.failures.items()):
            for reason in reasons:
                print(f"  - {backend}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
