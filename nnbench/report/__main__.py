"""``python -m nnbench.report``: render benchmarks, verification and accuracy into reports/.

Examples::

    python -m nnbench.report                      # latest saved benchmark run + reports/results
    python -m nnbench.report --quick              # quick embedded benchmark set (<= 2 min)
    python -m nnbench.report --no-run             # render only what exists, run nothing
    python -m nnbench.report --results .benchmarks/Linux-CPython-3.11-64bit/0003_x.json \\
        reports/results --out /tmp/report
"""

from __future__ import annotations

import argparse
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
        "With no saved benchmark run it times a quick embedded set first (unless --no-run).",
    )
    parser.add_argument(
        "--results",
        nargs="+",
        metavar="PATH",
        default=None,
        help="benchmark JSON files (pytest-benchmark --benchmark-autosave / --benchmark-json) "
        "and accuracy JSON files, or folders holding them (a folder gives its accuracy-*.json "
        "and its newest other run). Default: the newest run in "
        f"{DEFAULT_BENCHMARK_STORAGE}/ and {DEFAULT_RESULTS_DIR}/accuracy-*.json",
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
        help="time the quick embedded benchmark set (nnbench.bench.run_quick) instead of using "
        "saved benchmark runs",
    )
    mode.add_argument(
        "--no-run",
        action="store_true",
        help="run nothing (no benchmarks, no verification): render what exists and say what is "
        "missing",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for the quick benchmark set (default: all cores)",
    )
    args = parser.parse_args(argv)
    problem = unwritable_reason(args.out)
    if problem:
        parser.error(f"--out {args.out!r} cannot hold the report: {problem}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = build(
            results=args.results,
            out=args.out,
            quick=args.quick,
            no_run=args.no_run,
            threads=args.threads,
            progress=lambda text: print(text, file=sys.stderr, flush=True),
        )
    except ReportError as exc:
        print(f"python -m nnbench.report: error: {exc}", file=sys.stderr)
        print("Nothing was written; the previous report (if any) is untouched.", file=sys.stderr)
        return 2
    print(f"wrote {Path(args.out) / 'REPORT.md'} and {len(result.written) - 1} other file(s)")
    if result.missing:
        print("missing (see the report's 'What is missing'):")
        for line in result.missing:
            print(f"  - {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
