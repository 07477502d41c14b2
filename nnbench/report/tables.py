"""Result files -> pandas DataFrames -> markdown tables.

Every number shown is derived here, in one place, from the raw results:

* time: the benchmark's median over its rounds (pytest-benchmark ``stats.median``, seconds);
* GFLOP/s = ``extra_info.flops / stats.median / 1e9`` (flops of a direct convolution, so for
  ``fft`` it is the *effective* rate: how fast it does the same job);
* % of SGEMM peak = GFLOP/s / the SGEMM calibration's GFLOP/s (its median, too);
* speed-up vs torch = torch's median / the backend's median for the same test case;
* accuracy times come from ``time_to_accuracy`` of the ``nnbench.accuracy`` files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nnbench.report.load import AccuracyRun, BenchmarkRun, merged_records

PASS_ORDER = ("forward", "grad_inputs", "grad_kernels", "layer", "step", "sgemm")
CONV_PASSES = ("forward", "grad_inputs", "grad_kernels")
SUITE_ORDER = ("recipe", "kernel_size", "channels", "batch", "step", "calibration")
SUITE_TITLES = {
    "recipe": "Conv layers of the CIFAR-10 recipe",
    "kernel_size": "Kernel-size sweep",
    "channels": "Channel sweep",
    "batch": "Batch sweep",
    "step": "Training steps",
    "calibration": "SGEMM calibration",
}
CASE_KEY = ["suite", "label", "pass", "dtype", "input", "kernel", "padding"]


# --- formatting ---------------------------------------------------------------------------


def sig(value: float, digits: int = 3) -> str:
    """``value`` with about ``digits`` significant digits, never in exponent form above 1e-3."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude < 1e-3:
        return f"{value:.{digits - 1}e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(magnitude)))
    return f"{value:,.{decimals}f}"


def fixed(decimals: int, suffix: str = "") -> Callable[[float], str]:
    def fmt(value: float) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return f"{value:,.{decimals}f}{suffix}"

    return fmt


def sci(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return "0" if value == 0 else f"{value:.1e}"


def markdown(frame: pd.DataFrame, formats: dict[str, Callable] | None = None) -> str:
    """Pipe table of ``frame`` (index dropped): numbers right-aligned, formatted by ``formats``
    (column -> callable); other cells as ``str``."""
    formats = formats or {}
    shown = pd.DataFrame(index=frame.index)
    align = []
    for column in frame.columns:
        values = frame[column]
        fmt = formats.get(column)
        if fmt is None and pd.api.types.is_float_dtype(values.dtype):
            fmt = sig
        numeric = fmt is not None or pd.api.types.is_numeric_dtype(values.dtype)
        shown[column] = [
            fmt(v) if fmt is not None else ("—" if _missing(v) else str(v)) for v in values
        ]
        align.append("right" if numeric else "left")
    if shown.empty:
        return "_(no rows)_"
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _shape(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(int(v)) for v in value)
    return "" if value is None else str(value)


def _ordered(values: Iterable[str], order: Iterable[str]) -> list[str]:
    order = list(order)
    seen = list(dict.fromkeys(values))
    return [v for v in order if v in seen] + [v for v in seen if v not in order]


# --- benchmarks ---------------------------------------------------------------------------


def benchmark_frame(runs: list[BenchmarkRun]) -> pd.DataFrame:
    """One row per benchmark entry (all runs merged, later runs replacing the same test)."""
    rows = []
    for run, entry in merged_records(runs):
        extra = entry["extra_info"]
        stats = entry["stats"]
        memory = extra.get("peak_memory_bytes")
        rows.append(
            {
                "run": run.run_id,
                "test": entry.get("fullname") or entry.get("name") or "",
                "suite": extra["suite"],
                "label": extra["label"],
                "pass": extra["pass"],
                "backend": extra.get("backend") or "numpy",
                "dtype": extra.get("dtype") or "",
                "input": _shape(extra.get("input_shape")),
                "kernel": _shape(extra.get("kernel_shape")),
                "padding": "" if extra.get("padding") is None else str(extra["padding"]),
                "flops": float(extra["flops"]) if extra.get("flops") is not None else np.nan,
                "median_s": float(stats["median"]),
                "min_s": float(stats["min"]),
                "stddev_s": float(stats.get("stddev") or 0.0),
                "rounds": int(stats.get("rounds") or 0),
                "peak_memory_bytes": float(memory) if memory is not None else np.nan,
                "memory_method": extra.get("memory_method") or "",
                "threads": extra.get("threads"),
                "blas_threads": extra.get("blas_threads"),
                "torch_threads": extra.get("torch_threads"),
                "max_abs_error": extra.get("max_abs_error"),
            }
        )
    columns = [
        "run",
        "test",
        "suite",
        "label",
        "pass",
        "backend",
        "dtype",
        "input",
        "kernel",
        "padding",
        "flops",
        "median_s",
        "min_s",
        "stddev_s",
        "rounds",
        "peak_memory_bytes",
        "memory_method",
        "threads",
        "blas_threads",
        "torch_threads",
        "max_abs_error",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["max_abs_error"] = pd.to_numeric(frame["max_abs_error"], errors="coerce")
    frame["gflops"] = frame["flops"] / frame["median_s"] / 1e9
    peak = sgemm_peak(frame)
    frame["pct_peak"] = 100.0 * frame["gflops"] / peak if peak else np.nan
    frame["vs_torch"] = _vs_torch(frame)
    return frame


def sgemm_peak(frame: pd.DataFrame) -> float | None:
    """GFLOP/s of the SGEMM calibration (its median time); the best one if there are several."""
    sgemm = frame[(frame["pass"] == "sgemm") & frame["flops"].notna()]
    if sgemm.empty:
        return None
    return float((sgemm["flops"] / sgemm["median_s"] / 1e9).max())


def sgemm_row(frame: pd.DataFrame) -> pd.Series | None:
    sgemm = frame[(frame["pass"] == "sgemm") & frame["flops"].notna()]
    if sgemm.empty:
        return None
    return sgemm.loc[(sgemm["flops"] / sgemm["median_s"]).idxmax()]


def _vs_torch(frame: pd.DataFrame) -> pd.Series:
    torch_rows = frame[frame["backend"] == "torch"]
    reference = {tuple(r[k] for k in CASE_KEY): r["median_s"] for _, r in torch_rows.iterrows()}
    ratios = [
        reference.get(tuple(r[k] for k in CASE_KEY), np.nan) / r["median_s"]
        for _, r in frame.iterrows()
    ]
    return pd.Series(ratios, index=frame.index, dtype=float)


def backend_order(frame: pd.DataFrame) -> list[str]:
    names = sorted(set(frame["backend"]) - {"numpy"})
    return names + (["numpy"] if "numpy" in set(frame["backend"]) else [])


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Suites, then labels in the order the suite ran them, passes, backends."""
    if frame.empty:
        return frame
    suites = {s: i for i, s in enumerate(_ordered(frame["suite"], SUITE_ORDER))}
    labels = {s: i for i, s in enumerate(dict.fromkeys(frame["label"]))}
    passes = {s: i for i, s in enumerate(_ordered(frame["pass"], PASS_ORDER))}
    backends = {s: i for i, s in enumerate(backend_order(frame))}
    keys = pd.DataFrame(
        {
            "s": frame["suite"].map(suites),
            "l": frame["label"].map(labels),
            "p": frame["pass"].map(passes),
            "d": frame["dtype"],
            "b": frame["backend"].map(backends),
        },
        index=frame.index,
    )
    return frame.loc[keys.sort_values(["s", "l", "p", "d", "b"]).index]


LAYER_COLUMNS = {
    "label": "case",
    "pass": "pass",
    "backend": "backend",
    "dtype": "dtype",
    "input": "input n×d×h×w",
    "kernel": "kernel c×d×kh×kw",
    "padding": "p",
    "median_ms": "median (ms)",
    "gflops": "GFLOP/s",
    "pct_peak": "% of SGEMM peak",
    "vs_torch": "speed-up vs torch",
    "memory_mib": "peak memory (MiB)",
}
LAYER_FORMATS = {
    "median (ms)": sig,
    "GFLOP/s": sig,
    "% of SGEMM peak": fixed(1),
    "speed-up vs torch": fixed(2, "×"),
    "peak memory (MiB)": fixed(1),
}


def measurement_table(frame: pd.DataFrame, suite: str | None = None) -> pd.DataFrame:
    """Long table, one row per measurement: time, GFLOP/s, % of peak, speed-up, memory."""
    rows = frame if suite is None else frame[frame["suite"] == suite]
    rows = _sorted(rows[rows["pass"] != "sgemm"]).copy()
    rows["median_ms"] = rows["median_s"] * 1e3
    rows["memory_mib"] = rows["peak_memory_bytes"] / 2**20
    columns = dict(LAYER_COLUMNS)
    if suite is None:
        columns = {"suite": "suite", **columns}
    table = rows[list(columns)].rename(columns=columns).reset_index(drop=True)
    return table


def pivot(frame: pd.DataFrame, value: str, suite: str | None = None, passes=None) -> pd.DataFrame:
    """Rows (case, pass[, dtype]), one column per backend, cells ``value``."""
    rows = frame[frame["pass"] != "sgemm"]
    if suite is not None:
        rows = rows[rows["suite"] == suite]
    if passes is not None:
        rows = rows[rows["pass"].isin(passes)]
    rows = _sorted(rows[rows[value].notna()])
    if rows.empty:
        return pd.DataFrame()
    index = ["label", "pass"] + (["dtype"] if rows["dtype"].nunique() > 1 else [])
    if suite is None:
        index = ["suite", *index]
    backends = [b for b in backend_order(frame) if b in set(rows["backend"])]
    order = rows[index].drop_duplicates()
    table = rows.pivot_table(
        index=index, columns="backend", values=value, aggfunc="first", sort=False
    )
    table = table.reindex(pd.MultiIndex.from_frame(order) if len(index) > 1 else order[index[0]])
    table = table[backends].reset_index()
    table.columns.name = None
    return table.rename(columns={"label": "case"})


def geometric_mean_speedups(frame: pd.DataFrame, suite: str = "recipe") -> dict[str, float]:
    """Per backend: geometric mean over ``suite``'s conv cases (forward + both gradients) of
    the speed-up vs torch (issue 5's yardstick: im2col >= 0.8x, loop >= 0.5x)."""
    rows = frame[(frame["suite"] == suite) & frame["pass"].isin(CONV_PASSES)]
    rows = rows[rows["vs_torch"].notna() & (rows["vs_torch"] > 0)]
    return {
        backend: float(np.exp(np.log(group["vs_torch"]).mean()))
        for backend, group in rows.groupby("backend", sort=True)
    }


def best_fraction_of_peak(frame: pd.DataFrame, min_channels: int = 32) -> pd.Series | None:
    """The row with the highest % of SGEMM peak among conv passes of 3x3 kernels with at least
    ``min_channels`` input channels (issue 5: the best backend should reach 70%)."""
    rows = frame[frame["pass"].isin(CONV_PASSES) & frame["pct_peak"].notna()]
    shapes = rows["kernel"].str.split("x")
    ok = shapes.map(
        lambda s: len(s) == 4 and s[2] == s[3] == "3" and int(s[1]) >= min_channels
    ).astype(bool)
    rows = rows[ok]
    if rows.empty:
        return None
    return rows.loc[rows["pct_peak"].idxmax()]


@dataclass(frozen=True)
class Crossover:
    """Where ``fft`` overtakes the others in one series of the kernel-size sweep (None: never).

    series: the sweep's fixed shape, "n×d×h×w → c" (the sweep may run at several widths).
    """

    series: str
    pass_: str
    dtype: str
    kernel_sizes: tuple[int, ...]
    versus_im2col: int | None
    versus_all: int | None
    has_im2col: bool


def kernel_size(kernel: str) -> int | None:
    parts = kernel.split("x")
    return int(parts[2]) if len(parts) == 4 else None


def sweep_rows(frame: pd.DataFrame, suite: str = "kernel_size") -> pd.DataFrame:
    """The sweep's rows with ``k`` (kernel size) and ``series`` (the fixed input shape and
    output channels, "n×d×h×w → c") added."""
    rows = frame[(frame["suite"] == suite) & (frame["pass"] != "sgemm")].copy()
    rows["k"] = rows["kernel"].map(kernel_size)
    rows = rows[rows["k"].notna()]
    # Built in Python rather than with the .str accessor: on an empty sweep, pandas 3 with
    # pyarrow refuses to add its Arrow string column to the object column .str.split gives.
    rows["series"] = [
        f"{shape} → {kernel.split('x')[0]}" for shape, kernel in zip(rows["input"], rows["kernel"])
    ]
    return rows


def crossovers(frame: pd.DataFrame, suite: str = "kernel_size") -> list[Crossover]:
    """For each series, pass and dtype of the sweep: the smallest k from which fft is faster
    than im2col (resp. than every other backend) at every larger k of the sweep."""
    rows = sweep_rows(frame, suite)
    if rows.empty or "fft" not in set(rows["backend"]):
        return []
    results = []
    for (series, pass_, dtype), group in rows.groupby(["series", "pass", "dtype"], sort=False):
        times = group.pivot_table(index="k", columns="backend", values="median_s", aggfunc="min")
        if "fft" not in times:
            continue
        times = times.sort_index()
        others = [b for b in times.columns if b != "fft"]
        results.append(
            Crossover(
                series=series,
                pass_=pass_,
                dtype=dtype,
                kernel_sizes=tuple(int(k) for k in times.index),
                versus_im2col=_first_from(times, ["im2col"]) if "im2col" in times else None,
                versus_all=_first_from(times, others) if others else None,
                has_im2col="im2col" in times,
            )
        )
    order = {p: i for i, p in enumerate(PASS_ORDER)}
    return sorted(results, key=lambda c: (c.series, order.get(c.pass_, 99), c.dtype))


def _first_from(times: pd.DataFrame, others: list[str]) -> int | None:
    faster = [
        bool(np.all(times.loc[k, "fft"] < times.loc[k, others].dropna())) for k in times.index
    ]
    first = None
    for k, wins in zip(reversed(times.index), reversed(faster)):
        if not wins:
            break
        first = int(k)
    return first


# --- verification -------------------------------------------------------------------------


def verification_table(rows: list[dict]) -> pd.DataFrame:
    """Rows (backend, pass); for each dtype: max abs error, max rel error, exact-integer check."""
    if not rows:
        return pd.DataFrame()
    table = []
    keys = list(dict.fromkeys((r["backend"], r["pass"]) for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    by_key = {(r["backend"], r["pass"], r["dtype"]): r for r in rows}
    for backend, pass_ in keys:
        line = {"backend": backend, "pass": pass_}
        for dtype in dtypes:
            r = by_key.get((backend, pass_, dtype))
            if r is None:
                continue
            ran = r["cases"] > 0
            line[f"{dtype} max abs error"] = r["max_abs_error"] if ran else np.nan
            line[f"{dtype} max rel error"] = r["max_rel_error"] if ran else np.nan
            line[f"{dtype} exact on integers"] = exact_verdict(r)
        notes = []
        for dtype in dtypes:
            r = by_key.get((backend, pass_, dtype))
            if r and r["errors"]:
                notes.append(f"{dtype}: {len(r['errors'])} error(s), first: {r['errors'][0]}")
            if r and r["skipped"]:
                notes.append(f"{dtype}: {len(r['skipped'])} case(s) skipped")
        line["notes"] = "; ".join(notes)
        table.append(line)
    frame = pd.DataFrame(table)
    if not frame["notes"].any():
        frame = frame.drop(columns="notes")
    return frame


def exact_verdict(row: dict) -> str:
    if row["exact"] is None:
        return "not run"
    if row["exact"]:
        return "yes"
    return "NO (required)" if row["exact_required"] else "no (not required)"


def verification_formats(frame: pd.DataFrame) -> dict[str, Callable]:
    return {c: sci for c in frame.columns if c.endswith("error")}


# --- accuracy -----------------------------------------------------------------------------

ASSIGNMENT_LIMITS = {"mnist": (0.90, 600.0), "cifar10": (0.70, 3600.0)}
DATASET_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}
DATASET_THRESHOLDS = {"mnist": (0.90, 0.98), "cifar10": (0.70, 0.80)}


@dataclass(frozen=True)
class Target:
    """Reach ``accuracy`` within ``seconds`` on ``dataset``; ``kernels`` None = any kernel
    (the fastest one counts)."""

    name: str
    dataset: str
    accuracy: float
    seconds: float
    kernels: tuple[str, ...] | None = None


def project_targets(cifar_kernels: Iterable[str]) -> list[Target]:
    """Issue 4's targets, plus 'every kernel reaches 70% within the 60-minute limit'."""
    targets = [
        Target("MNIST ≥ 98% in ≤ 60 s (dense-only)", "mnist", 0.98, 60.0),
        Target("CIFAR-10, fastest kernel: ≥ 70% in ≤ 3 min", "cifar10", 0.70, 180.0),
        Target("CIFAR-10, fastest kernel: ≥ 80% in ≤ 15 min", "cifar10", 0.80, 900.0),
        Target("CIFAR-10, im2col: ≥ 70% in ≤ 5 min", "cifar10", 0.70, 300.0, ("im2col",)),
    ]
    for kernel in cifar_kernels:
        targets.append(
            Target(f"CIFAR-10, {kernel}: ≥ 70% in ≤ 60 min", "cifar10", 0.70, 3600.0, (kernel,))
        )
    return targets


def time_to(run: AccuracyRun, accuracy: float) -> float | None:
    """Seconds until the test accuracy first reached ``accuracy`` (None: never)."""
    recorded = {float(k): v for k, v in (run.data.get("time_to_accuracy") or {}).items()}
    for key, value in recorded.items():
        if math.isclose(key, accuracy):
            return value
    for epoch in run.data["history"]:
        if epoch["valid_accuracy"] >= accuracy:
            return float(epoch["elapsed_seconds"])
    return None


def run_seconds(run: AccuracyRun) -> float | None:
    """Training plus evaluation seconds (what the assignment's time limit covers)."""
    data = run.data
    if isinstance(data.get("wall_seconds"), (int, float)):
        return float(data["wall_seconds"])
    parts = [data.get("train_seconds"), data.get("evaluate_seconds")]
    return float(sum(parts)) if all(isinstance(p, (int, float)) for p in parts) else None


def limit_of(run: AccuracyRun) -> tuple[float, float]:
    limit = run.data.get("limit") or {}
    default = ASSIGNMENT_LIMITS.get(run.dataset, (math.nan, math.nan))
    return float(limit.get("accuracy", default[0])), float(limit.get("seconds", default[1]))


def limit_met(run: AccuracyRun) -> bool:
    accuracy, seconds = limit_of(run)
    took = run_seconds(run)
    return run.data["final_test_accuracy"] > accuracy and took is not None and took <= seconds


def accuracy_table(runs: list[AccuracyRun], dataset: str) -> pd.DataFrame:
    """One row per run of ``dataset``: accuracy, time to each threshold, the limit verdict."""
    thresholds = DATASET_THRESHOLDS.get(dataset, (0.7, 0.8, 0.9))
    rows = []
    for run in runs:
        if run.dataset != dataset:
            continue
        accuracy, seconds = limit_of(run)
        row = {
            "kernel": run.kernel,
            "preset": run.data.get("preset", ""),
            "seed": run.data.get("seed", ""),
            "smoke": "yes" if run.smoke else "no",
            "test accuracy (%)": 100.0 * run.data["final_test_accuracy"],
        }
        for t in thresholds:
            value = time_to(run, t)
            row[f"time to {t:.0%} (s)"] = "not reached" if value is None else f"{value:,.1f}"
        row["train + evaluate (s)"] = run_seconds(run)
        row[f"limit > {accuracy:.0%} in ≤ {seconds:.0f} s"] = (
            "n/a (smoke)" if run.smoke else ("met" if limit_met(run) else "MISSED")
        )
        row["file"] = run.run_id
        rows.append(row)
    return pd.DataFrame(rows)


ACCURACY_FORMATS = {"test accuracy (%)": fixed(2), "train + evaluate (s)": fixed(1)}


def target_table(runs: list[AccuracyRun], targets: list[Target]) -> pd.DataFrame:
    """One row per target: the best full (non-smoke) run's time to the threshold and verdict."""
    rows = []
    for target in targets:
        eligible = [
            r
            for r in runs
            if r.dataset == target.dataset
            and not r.smoke
            and (target.kernels is None or r.kernel in target.kernels)
        ]
        timed = [(time_to(r, target.accuracy), r) for r in eligible]
        reached = [(t, r) for t, r in timed if t is not None]
        if reached:
            seconds, best = min(reached, key=lambda tr: tr[0])
            verdict = "met" if seconds <= target.seconds else "MISSED"
            rows.append(
                {
                    "target": target.name,
                    "kernel": best.kernel,
                    "time to threshold (s)": seconds,
                    "verdict": verdict,
                    "runs": len(eligible),
                    "best run": best.run_id,
                }
            )
        else:
            rows.append(
                {
                    "target": target.name,
                    "kernel": "—",
                    "time to threshold (s)": np.nan,
                    "verdict": "MISSED (never reached)" if eligible else "no full run",
                    "runs": len(eligible),
                    "best run": "—",
                }
            )
    return pd.DataFrame(rows)


TARGET_FORMATS = {"time to threshold (s)": fixed(1), "runs": str}
TWIN_RATIO_TARGET = 1.3


def twin_table(runs: list[AccuracyRun]) -> pd.DataFrame:
    """Engine vs the same network in pure torch, for runs that trained the twin too."""
    rows = []
    for run in runs:
        twin = run.data.get("torch_twin")
        if not twin:
            continue
        ratio = twin.get("ratio")
        ratio = float(ratio) if isinstance(ratio, (int, float)) else math.nan
        rows.append(
            {
                "dataset": DATASET_TITLES.get(run.dataset, run.dataset),
                "kernel": run.kernel,
                "preset": run.data.get("preset", ""),
                "smoke": "yes" if run.smoke else "no",
                "engine train (s)": ratio * float(twin["seconds"]),
                "pure torch train (s)": float(twin["seconds"]),
                "engine / torch": ratio,
                f"≤ {TWIN_RATIO_TARGET}×": "n/a (smoke)"
                if run.smoke
                else ("met" if ratio <= TWIN_RATIO_TARGET else "MISSED"),
                "engine test acc. (%)": 100.0 * run.data["final_test_accuracy"],
                "torch test acc. (%)": 100.0 * float(twin.get("final_test_accuracy", math.nan)),
                "file": run.run_id,
            }
        )
    return pd.DataFrame(rows)


TWIN_FORMATS = {
    "engine train (s)": fixed(1),
    "pure torch train (s)": fixed(1),
    "engine / torch": fixed(2, "×"),
    "engine test acc. (%)": fixed(2),
    "torch test acc. (%)": fixed(2),
}
