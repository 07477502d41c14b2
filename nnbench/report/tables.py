"""Result files -> pandas DataFrames -> markdown tables.

Every number shown is derived here or in ``metrics``, from the raw results:

* time: the benchmark's median over its rounds (pytest-benchmark ``stats.median``, seconds);
  spread: its interquartile range (``stats.q1``/``q3``, or from the rounds in ``stats.data``);
  a median whose IQR is wider than ``NOISY_IQR`` of it is marked;
* GFLOP/s = ``extra_info.flops / stats.median / 1e9`` (flops of a direct convolution, so for
  ``fft`` and ``winograd`` it is the *effective* rate: how fast they do the same job);
* % of SGEMM peak = GFLOP/s / the GFLOP/s of the SGEMM calibration of the same column;
* speed-up vs torch = torch's median / the backend's median for the same case and column;
* accuracy times come from ``time_to_accuracy`` of the ``nnbench.accuracy`` files.

A *column* is a machine at one thread count (``provenance.Column``): runs from different
machines or thread counts stand side by side, one column each.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

import kernels
from nnbench import policy
from nnbench.report import provenance, verify
from nnbench.report.load import AccuracyRun, BenchmarkRun, twin_measured_as

PASS_ORDER = ("forward", "grad_inputs", "grad_kernels", "layer", "step", "overhead", "sgemm")
CONV_PASSES = ("forward", "grad_inputs", "grad_kernels")
SUITE_ORDER = (
    "recipe", "kernel_size", "channels", "batch", "step", "scaling", "oversubscribed", "overhead"
)  # fmt: skip
SUITE_TITLES = {
    "recipe": "Conv layers of the CIFAR-10 recipe",
    "kernel_size": "Kernel-size sweep",
    "channels": "Channel sweep",
    "batch": "Batch sweep",
    "step": "Training steps",
    "scaling": "Scaling with threads",
    "oversubscribed": "More threads than cores",
    "overhead": "Engine overhead",
    "sgemm": "SGEMM calibration",
}
CASE_KEY = ["column", "suite", "label", "pass", "dtype", "input", "kernel", "padding"]
#: A median whose interquartile range is wider than this fraction of it is marked as noisy.
NOISY_IQR = 0.2
#: Backends that are not a convolution algorithm of their own.
NOT_ALGORITHMS = ("auto", "gemm", "numpy")


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
        if _missing(value):
            return "—"
        return f"{value:,.{decimals}f}{suffix}"

    return fmt


def sci(value: float) -> str:
    if _missing(value):
        return "—"
    return "0" if value == 0 else f"{value:.1e}"


def times(value: float) -> str:
    """A ratio: '0.42×'."""
    return "—" if _missing(value) else f"{value:.2f}×"


def markdown(frame: pd.DataFrame, formats: dict[str, Callable] | None = None) -> str:
    """Pipe table of ``frame`` (index dropped): numbers right-aligned, formatted by ``formats``
    (column -> callable); other cells as ``str``."""
    formats = formats or {}
    if frame.empty:
        return "_(no rows)_"
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
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _shape(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(int(v)) for v in value)
    return "" if value is None else str(value)


def ordered(values: Iterable[str], order: Iterable[str]) -> list[str]:
    order = list(order)
    seen = list(dict.fromkeys(values))
    return [v for v in order if v in seen] + [v for v in seen if v not in order]


def geomean(values: Iterable[float]) -> float:
    values = [float(v) for v in values if not _missing(v) and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else math.nan


# --- benchmarks ---------------------------------------------------------------------------

FRAME_COLUMNS = [
    "run",
    "column",
    "column_order",
    "old_code",
    "machine",
    "cpu",
    "test",
    "suite",
    "label",
    "pass",
    "backend",
    "dtype",
    "input",
    "kernel",
    "padding",
    "case_id",
    "flops",
    "median_s",
    "min_s",
    "q1_s",
    "q3_s",
    "rounds",
    "rounds_s",
    "threads",
    "blas",
    "peak_memory_bytes",
    "memory_method",
    "passed",
    "verdict",
    "breakdown_s",
    "gemm_bound_s",
    "gemm_bound_call_s",
    "auto_choice",
    "auto_race",
    "beside_median_s",
    "beside_rounds_s",
    "ratio",
    "twin_median_s",
    "cores_threads",
    "blas_threads",
    "torch_threads",
]


def _race_choice(extra: dict) -> str | None:
    """What auto's race chose, in a record whose plan then went through a trial (its finalists,
    the keys of ``auto_trial``, taking turns on auto's calls): as recorded (``auto_race``), or
    in records of before it was, the finalist of smallest race median (the race's choice but
    where the close candidates' medians rose by over ``auto.CLOSE_FACTOR`` in the race's later
    rounds). None for a plan with no trial (one finalist) and for records of before the trial."""
    trial, raced = extra.get("auto_trial"), extra.get("auto_seconds")
    if not isinstance(trial, dict) or not isinstance(raced, dict):
        return None
    if isinstance(extra.get("auto_race"), str):
        return extra["auto_race"]
    finalists = [name for name in trial if isinstance(raced.get(name), (int, float))]
    return min(finalists, key=raced.get) if finalists else None


def _quartiles(stats: dict) -> tuple[float, float]:
    """(q1, q3) seconds: pytest-benchmark's, or computed from every round where only those are
    kept; NaN when neither is there."""
    if isinstance(stats.get("q1"), (int, float)) and isinstance(stats.get("q3"), (int, float)):
        return float(stats["q1"]), float(stats["q3"])
    data = stats.get("data")
    if isinstance(data, list) and data:
        q1, q3 = np.percentile(np.asarray(data, dtype=float), [25, 75])
        return float(q1), float(q3)
    return math.nan, math.nan


def _columns(runs: list[BenchmarkRun]) -> dict[tuple[str, object], provenance.Column]:
    """(run id, record threads) -> the record's column: the machine (its CPU's name, cores, and
    family and model where recorded), the threads and the BLAS kernels. A run of code that has
    changed since is tagged with its commit ("at <commit>"; a run of the old record schema: "old
    code <commit>"), so runs merge, and are judged together, only where they measured the same
    code. A run whose code cannot be compared (no commit recorded, or one this checkout lacks,
    as for a user's run outside git) stays in its machine's column; *Runs used* says so."""
    found = {}
    for run in runs:
        machine = provenance.machine_label(run.machine)
        blas = provenance.blas_architectures(run.machine)
        cpu = provenance.cpu_identity(run.machine)
        commit, dirty, note = provenance.recorded_source(run.machine, run.commit)
        old = changed = None
        if run.old_schema:
            old = commit or "unknown"
        elif provenance.code_status(commit, dirty, note, provenance.SUITE_CODE).changed:
            changed = str(commit)
        default = provenance.run_threads(run.machine)
        for entry in run.records:
            threads = entry["extra_info"].get("threads") or default
            key = (run.run_id, threads)
            found[key] = provenance.Column(machine, threads, blas, old, changed, cpu)
    return found


def in_date_order(runs: list[BenchmarkRun]) -> list[BenchmarkRun]:
    """``runs`` oldest first (then by file name): the order in which a column merges them."""
    return sorted(runs, key=lambda r: (r.datetime or "", r.run_id))


def benchmark_frame(runs: list[BenchmarkRun], merge: bool = True) -> pd.DataFrame:
    """One row per benchmark entry. Runs of one column are merged, a later run's entry replacing
    an earlier entry of the same test (re-running part of the suite updates it, as long as the
    code it measures has not changed: a run of changed code has a column of its own, see
    ``_columns``); with ``merge`` false every run keeps its own entries (the ``run`` column
    tells them apart)."""
    columns = _columns(runs)
    labels = provenance.column_labels(columns.values())
    # A machine (threads aside) gets one label for all its columns: the scaling group's name.
    bare = {c: dataclasses.replace(c, threads=None) for c in columns.values()}
    machine_labels = provenance.column_labels(set(bare.values()), with_threads=False)
    machines = {c: machine_labels[b] for c, b in bare.items()}
    order = {label: i for i, label in enumerate(labels.values())}
    rows: dict[tuple, dict] = {}
    for run in in_date_order(runs):
        default = provenance.run_threads(run.machine)
        blas = provenance.blas_kernels(run.machine)
        for entry in run.records:
            extra, stats = entry["extra_info"], entry["stats"]
            threads = extra.get("threads") or default
            column = columns[(run.run_id, threads)]
            test = entry.get("fullname") or entry.get("name") or repr(sorted(extra.items()))
            q1, q3 = _quartiles(stats)
            verdict = extra.get("verdict") if isinstance(extra.get("verdict"), dict) else None
            memory = extra.get("peak_memory_bytes")
            row = {
                "run": run.run_id,
                "column": labels[column],
                "column_order": order[labels[column]],
                "old_code": column.old_commit or column.changed_commit or "",
                "machine": machines[column],
                "cpu": provenance.machine_label(run.machine),
                "test": test,
                "suite": extra["suite"],
                "label": extra["label"],
                "pass": extra["pass"],
                "backend": extra.get("backend") or "numpy",
                "dtype": extra.get("dtype") or "",
                "input": _shape(extra.get("input_shape")),
                "kernel": _shape(extra.get("kernel_shape")),
                "padding": "" if extra.get("padding") is None else str(extra["padding"]),
                "case_id": extra.get("case_id") or "",
                "flops": float(extra["flops"]) if extra.get("flops") is not None else np.nan,
                "median_s": float(stats["median"]),
                "min_s": float(stats["min"]),
                "q1_s": q1,
                "q3_s": q3,
                "rounds": int(stats.get("rounds") or 0),
                "rounds_s": _seconds(stats.get("data")),
                "threads": threads,
                "blas": blas,
                "peak_memory_bytes": float(memory) if memory is not None else np.nan,
                "memory_method": extra.get("memory_method") or "",
                "passed": None if verdict is None else bool(verdict.get("passed")),
                "verdict": verdict,
                "breakdown_s": extra.get("breakdown_s") or None,
                "gemm_bound_s": _float(extra.get("gemm_bound_s")),
                "gemm_bound_call_s": _float(extra.get("gemm_bound_call_s")),
                "auto_choice": extra.get("auto_choice"),
                "auto_race": _race_choice(extra),
                "beside_median_s": extra.get("beside_median_s") or None,
                "beside_rounds_s": extra.get("beside_rounds_s") or None,
                "ratio": _float(extra.get("ratio")),
                "twin_median_s": _float(extra.get("twin_median_s")),
                "cores_threads": _float(extra.get("cores_threads")),
                "blas_threads": _float(extra.get("blas_threads")),
                "torch_threads": _float(extra.get("torch_threads")),
            }
            key = (row["column"], test) if merge else (run.run_id, row["column"], test)
            rows.pop(key, None)
            rows[key] = row
    frame = pd.DataFrame(list(rows.values()), columns=FRAME_COLUMNS)
    frame["median_ms"] = frame["median_s"] * 1e3
    frame["iqr_fraction"] = (frame["q3_s"] - frame["q1_s"]) / frame["median_s"]
    frame["noisy"] = frame["iqr_fraction"] > NOISY_IQR
    frame["gflops"] = frame["flops"] / frame["median_s"] / 1e9
    peaks = {column: peak.gflops for column, peak in sgemm_peaks(frame).items()}
    frame["pct_peak"] = 100.0 * frame["gflops"] / frame["column"].map(peaks).astype(float)
    frame["vs_torch"] = _vs_torch(frame, within_run=not merge)
    return _sorted(frame)


def _seconds(value: object) -> list[float] | None:
    """A record's times round by round (pytest-benchmark's ``stats["data"]``), or None."""
    if not isinstance(value, list) or not value:
        return None
    try:
        return [float(x) for x in value]
    except (TypeError, ValueError):
        return None


def _float(value: object) -> float:
    return (
        float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan
    )


def old_code_columns(frame: pd.DataFrame) -> set[str]:
    """The columns of runs whose code has changed since (their label names the commit)."""
    if frame.empty:
        return set()
    return set(frame.loc[frame["old_code"] != "", "column"])


def column_order(frame: pd.DataFrame) -> list[str]:
    """The columns present, in order (current code first, fewer cores first)."""
    pairs = frame[["column", "column_order"]].drop_duplicates().sort_values("column_order")
    return list(pairs["column"])


@dataclass(frozen=True)
class Peak:
    """The SGEMM calibration of one column: what '% of SGEMM peak' there is relative to."""

    column: str
    gflops: float
    median_s: float
    rounds: int
    shape: str  # "2048x2048 @ 2048x2048"
    blas: str  # "OpenBLAS 0.3.30 (Haswell kernels)"
    machine: str

    @property
    def text(self) -> str:
        return (
            f"numpy float32 matmul {self.shape} with {self.blas} on {self.machine}: "
            f"{sig(self.gflops)} GFLOP/s (median {sig(self.median_s * 1e3)} ms over "
            f"{self.rounds} rounds)"
        )


def sgemm_peaks(frame: pd.DataFrame) -> dict[str, Peak]:
    """Column -> its SGEMM calibration (the fastest one if there are several)."""
    sgemm = frame[(frame["pass"] == "sgemm") & frame["flops"].notna()]
    peaks = {}
    for column, group in sgemm.groupby("column", sort=False):
        row = group.loc[(group["flops"] / group["median_s"]).idxmax()]
        peaks[column] = Peak(
            column=column,
            gflops=float(row["flops"] / row["median_s"] / 1e9),
            median_s=float(row["median_s"]),
            rounds=int(row["rounds"]),
            shape=f"{row['input']} @ {row['kernel']}",
            blas=row["blas"],
            machine=f"{row['cpu']}, {row['threads']} threads",
        )
    return peaks


def _vs_torch(frame: pd.DataFrame, within_run: bool = False) -> pd.Series:
    """torch's median / each row's, torch's of the same case (and, ``within_run``, run)."""
    if frame.empty:
        return pd.Series(dtype=float)
    key = (*CASE_KEY, "run") if within_run else CASE_KEY
    torch_rows = frame[frame["backend"] == "torch"]
    reference = {tuple(r[k] for k in key): r["median_s"] for _, r in torch_rows.iterrows()}
    ratios = [
        reference.get(tuple(r[k] for k in key), np.nan) / r["median_s"] for _, r in frame.iterrows()
    ]
    return pd.Series(ratios, index=frame.index, dtype=float)


def backend_order(names: Iterable[str]) -> list[str]:
    """Algorithms sorted by name, then auto, then the reference GEMM and plain numpy."""
    names = set(names)
    return sorted(names - set(NOT_ALGORITHMS)) + [n for n in NOT_ALGORITHMS if n in names]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns, suites, labels in the order the suite ran them, passes, backends."""
    if frame.empty:
        return frame
    suites = {s: i for i, s in enumerate(ordered(frame["suite"], SUITE_ORDER))}
    labels = {s: i for i, s in enumerate(dict.fromkeys(frame["label"]))}
    passes = {s: i for i, s in enumerate(ordered(frame["pass"], PASS_ORDER))}
    backends = {s: i for i, s in enumerate(backend_order(frame["backend"]))}
    keys = pd.DataFrame(
        {
            "c": frame["column_order"],
            "s": frame["suite"].map(suites),
            "l": frame["label"].map(labels),
            "p": frame["pass"].map(passes),
            "d": frame["dtype"],
            "t": frame["threads"].fillna(0).astype(float),
            "b": frame["backend"].map(backends),
        },
        index=frame.index,
    )
    return frame.loc[keys.sort_values(["c", "s", "l", "p", "d", "t", "b"]).index].reset_index(
        drop=True
    )


# --- failures -----------------------------------------------------------------------------


def failed_records(frame: pd.DataFrame) -> pd.DataFrame:
    """Benchmark records whose post-timing check failed (saved with their timings)."""
    if frame.empty:
        return frame
    return frame[~not_failed(frame)]


def not_failed(frame: pd.DataFrame) -> pd.Series:
    """Rows whose check passed or was not recorded (older runs)."""
    return frame["passed"].map(lambda passed: passed is not False).astype(bool)


def failures(frame: pd.DataFrame, verification: dict | None) -> dict[str, list[str]]:
    """Backend -> what failed, in words: verification cells and benchmark records."""
    found: dict[str, list[str]] = {}
    for check in (verification or {}).get("checks", []):
        if not check["passed"]:
            first = check["failures"][0]
            found.setdefault(check["backend"], []).append(
                f"verification {check['pass']} {check['dtype']}: {check['failed']} of "
                f"{check['checked']} comparisons failed, first {failure_text(first)}"
            )
    for _, row in failed_records(frame).iterrows():
        found.setdefault(row["backend"], []).append(
            f"benchmark {row['label']} {row['pass']} ({row['column']}): "
            f"{failure_text(row['verdict'])}"
        )
    return found


def failure_text(verdict: dict) -> str:
    """'k3p1[...] (normal operands): max abs error 1.2e-03 against bound 4.1e-06 at [0, 1, 2, 3]'
    (the bound at the worst element)."""
    where = verdict.get("case") or verdict.get("name") or "?"
    if verdict.get("operands"):
        where += f" ({verdict['operands']} operands)"
    if verdict.get("problem"):
        return f"{where}: {verdict['problem']}"
    rule = "exact equality" if verdict.get("exact") else f"bound {sci(verdict.get('bound'))}"
    worst = verdict.get("worst")
    at = f" at {worst}" if worst is not None else ""
    return f"{where}: max abs error {sci(verdict.get('max_abs_error'))} against {rule}{at}"


def backend_cell(backend: str, failed: Iterable[str], pass_: str | None = None) -> str:
    """A backend's name as tables show it: FAILED where it failed a check, and the route a
    pass takes when another backend's algorithm computes it."""
    text = backend
    if pass_ is not None and backend in kernels.available():
        other = verify.rerouted(backend, pass_)
        if other:
            text += f" (via {other})"
    if backend in set(failed):
        text += " FAILED"
    return text


# --- side by side -------------------------------------------------------------------------


def side_by_side(
    frame: pd.DataFrame,
    suite: str,
    failed: Iterable[str] = (),
    passes: Iterable[str] | None = None,
    with_speedup: bool = True,
) -> pd.DataFrame:
    """Rows (case, pass, backend), one column per machine and thread count; cells: the median
    in ms ('~' where the IQR is wide) and, with ``with_speedup``, torch's median / this one."""
    rows = frame[(frame["suite"] == suite) & (frame["pass"] != "sgemm")]
    if passes is not None:
        rows = rows[rows["pass"].isin(list(passes))]
    if rows.empty:
        return pd.DataFrame()
    failed = list(failed)
    columns = column_order(rows)
    keys = list(dict.fromkeys(zip(rows["label"], rows["pass"], rows["backend"])))
    backends = backend_order(rows["backend"])
    keys.sort(
        key=lambda k: (
            _first_index(rows, k[0]),
            PASS_ORDER.index(k[1]) if k[1] in PASS_ORDER else 99,
            backends.index(k[2]),
        )
    )
    cells = {(r["label"], r["pass"], r["backend"], r["column"]): r for _, r in rows.iterrows()}
    table = []
    for label, pass_, backend in keys:
        line = {"case": label, "pass": pass_, "backend": backend_cell(backend, failed, pass_)}
        for column in columns:
            r = cells.get((label, pass_, backend, column))
            line[column] = "—" if r is None else timing_cell(r, with_speedup)
        table.append(line)
    return pd.DataFrame(table)


def _first_index(rows: pd.DataFrame, label: str) -> int:
    return int(np.flatnonzero(rows["label"].to_numpy() == label)[0])


def timing_cell(row, with_speedup: bool = True) -> str:
    text = ("~" if row["noisy"] else "") + sig(row["median_ms"])
    if with_speedup and row["backend"] != "torch" and not _missing(row["vs_torch"]):
        text += f" · {row['vs_torch']:.2f}×"
    if row["passed"] is False:
        text += " FAILED"
    return text


def measurement_table(frame: pd.DataFrame, failed: Iterable[str] = ()) -> pd.DataFrame:
    """Long table, one row per measurement (every run, every suite but SGEMM)."""
    rows = frame[frame["pass"] != "sgemm"].copy()
    failed = list(failed)
    rows["backend"] = [backend_cell(b, failed, p) for b, p in zip(rows["backend"], rows["pass"])]
    rows["memory_mib"] = rows["peak_memory_bytes"] / 2**20
    rows["iqr_pct"] = 100.0 * rows["iqr_fraction"]
    rows["check"] = rows["passed"].map({True: "passed", False: "FAILED", None: "not recorded"})
    columns = {
        "column": "machine · threads",
        "suite": "suite",
        "label": "case",
        "pass": "pass",
        "backend": "backend",
        "threads": "threads",
        "median_ms": "median (ms)",
        "iqr_pct": "IQR (% of median)",
        "rounds": "rounds",
        "gflops": "GFLOP/s",
        "pct_peak": "% of SGEMM peak",
        "vs_torch": "speed-up vs torch",
        "memory_mib": "peak memory (MiB)",
        "check": "check",
        "run": "file",
    }
    return rows[list(columns)].rename(columns=columns).reset_index(drop=True)


MEASUREMENT_FORMATS = {
    "median (ms)": sig,
    "IQR (% of median)": fixed(0),
    "rounds": str,
    "GFLOP/s": sig,
    "% of SGEMM peak": fixed(1),
    "speed-up vs torch": times,
    "peak memory (MiB)": fixed(1),
}


def pivot(frame: pd.DataFrame, value: str, suite: str, failed: Iterable[str] = ()) -> pd.DataFrame:
    """Rows (column, case, pass), one column per backend, cells ``value``."""
    rows = frame[(frame["suite"] == suite) & (frame["pass"] != "sgemm") & frame[value].notna()]
    if rows.empty:
        return pd.DataFrame()
    failed = list(failed)
    index = ["column", "label", "pass"]
    order = rows[index].drop_duplicates()
    table = rows.pivot_table(
        index=index, columns="backend", values=value, aggfunc="first", sort=False
    )
    table = table.reindex(pd.MultiIndex.from_frame(order))
    table = table[backend_order(rows["backend"])].reset_index()
    table.columns.name = None
    if rows["column"].nunique() == 1:
        table = table.drop(columns="column")
    return table.rename(
        columns={"label": "case", "column": "machine · threads"}
        | {b: backend_cell(b, failed) for b in set(rows["backend"])}
    )


# --- kernel-size sweep --------------------------------------------------------------------


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


#: Fewer measured kernel sizes than this and a sweep is called partial.
FULL_SWEEP = 3


@dataclass(frozen=True)
class Crossover:
    """Where ``fft`` overtakes the others in one series of the sweep, bracketed by the kernel
    sizes that were measured: faster at ``at`` and every larger measured k, not at ``below``
    (the next smaller measured k). ``at`` None: not faster at the largest k measured;
    ``below`` None: faster at every k measured."""

    column: str
    series: str  # the sweep's fixed shape, "n×d×h×w → c"
    pass_: str
    dtype: str
    kernel_sizes: tuple[int, ...]
    against: str  # "im2col", or "every other backend"
    at: int | None
    below: int | None

    @property
    def partial(self) -> bool:
        return len(self.kernel_sizes) < FULL_SWEEP

    def sentence(self) -> str:
        """What was measured, in words, without claiming sizes that were not."""
        who = f"`{self.against}`" if self.against != "every other backend" else self.against
        ks = ", ".join(map(str, self.kernel_sizes))
        if self.at is None:
            text = f"`fft` is not faster than {who} at the largest k measured (k = {ks})"
        elif self.below is None:
            text = f"`fft` is faster than {who} at every k measured (k = {ks})"
        else:
            text = f"`fft` overtakes {who} between k = {self.below} and k = {self.at}"
            text += f" (measured k = {ks})"
        if self.partial:
            text += f"; partial sweep: only {len(self.kernel_sizes)} kernel sizes measured"
        return text


def crossovers(frame: pd.DataFrame, suite: str = "kernel_size") -> list[Crossover]:
    """For each column, series, pass and dtype of the sweep: where fft overtakes im2col, and
    where it overtakes every other algorithm (auto, the chooser, is left out)."""
    rows = sweep_rows(frame, suite)
    rows = rows[~rows["backend"].isin(NOT_ALGORITHMS)]
    if rows.empty or "fft" not in set(rows["backend"]):
        return []
    found = []
    keys = ["column", "series", "pass", "dtype"]
    for (column, series, pass_, dtype), group in rows.groupby(keys, sort=False):
        medians = group.pivot_table(index="k", columns="backend", values="median_s", aggfunc="min")
        if "fft" not in medians:
            continue
        medians = medians.sort_index()
        sizes = tuple(int(k) for k in medians.index)
        others = [b for b in medians.columns if b != "fft"]
        for against, competitors in (("im2col", ["im2col"]), ("every other backend", others)):
            if not competitors or not set(competitors) <= set(medians.columns):
                continue
            at, below = _overtakes(medians, competitors)
            found.append(Crossover(column, series, pass_, dtype, sizes, against, at, below))
    order = {p: i for i, p in enumerate(PASS_ORDER)}
    return sorted(found, key=lambda c: (c.column, c.series, order.get(c.pass_, 99), c.dtype))


def _overtakes(medians: pd.DataFrame, others: list[str]) -> tuple[int | None, int | None]:
    """(at, below): the smallest measured k from which fft beats ``others`` at every larger
    measured k, and the measured k before it."""
    sizes = [int(k) for k in medians.index]
    wins = [bool(np.all(medians.loc[k, "fft"] < medians.loc[k, others].dropna())) for k in sizes]
    at = None
    for k, won in zip(reversed(sizes), reversed(wins)):
        if not won:
            break
        at = k
    if at is None:
        return None, None
    index = sizes.index(at)
    return at, (sizes[index - 1] if index > 0 else None)


# --- verification -------------------------------------------------------------------------


def verification_table(payload: dict, failed: Iterable[str] = ()) -> pd.DataFrame:
    """The PASS/FAIL matrix: one row per backend x pass x dtype, with its cases."""
    failed = list(failed)
    rows = []
    for check in payload.get("checks", []):
        closest = check.get("closest") or {}
        first = check["failures"][0] if check["failures"] else None
        if check["exact_required"]:
            exact = {True: "yes", False: "NO", None: "not run"}[check["exact_equal"]]
        else:
            exact = "not required"
        skipped = len(check["skipped"])
        rows.append(
            {
                "backend": backend_cell(check["backend"], failed, check["pass"]),
                "pass": check["pass"],
                "dtype": check["dtype"],
                "verdict": "PASS" if check["passed"] else "FAIL",
                "comparisons passed": f"{check['checked'] - check['failed']} of {check['checked']}"
                + (f" ({skipped} cases declined)" if skipped else ""),
                "worst case": failure_text(first) if first else _closest_text(closest),
                "exact on integers": exact,
            }
        )
    return pd.DataFrame(rows)


def _closest_text(record: dict) -> str:
    if not record:
        return "—"
    bound = record.get("bound") or 0.0
    error = record.get("max_abs_error") or 0.0
    if bound == 0:
        return f"{record['case']} ({record['operands']}): exact"
    return (
        f"{record['case']} ({record['operands']}): max abs error {sci(error)}, "
        f"{error / bound:.0%} of its bound {sci(bound)}"
    )


def verification_summary(payload: dict) -> dict[str, int]:
    checks = payload.get("checks", [])
    return {
        "cells": len(checks),
        "failed_cells": sum(not c["passed"] for c in checks),
        "comparisons": sum(c["checked"] for c in checks),
        "failed": sum(c["failed"] for c in checks),
        "declined": sum(len(c["skipped"]) for c in checks),
    }


# --- accuracy -----------------------------------------------------------------------------

DATASET_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


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


def limit_met(run: AccuracyRun) -> bool:
    limit = policy.LIMITS[run.dataset]
    took = run_seconds(run)
    return (
        run.data["final_test_accuracy"] > limit.accuracy
        and took is not None
        and took <= limit.seconds
    )


def accuracy_table(runs: list[AccuracyRun], dataset: str) -> pd.DataFrame:
    """One row per run of ``dataset``: accuracy, time to each threshold, the limit verdict."""
    thresholds = policy.accuracy_levels(dataset)
    limit = policy.LIMITS[dataset]
    rows = []
    for run in runs:
        if run.dataset != dataset:
            continue
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
        row[f"limit: {limit.name}"] = (
            "n/a (smoke)" if run.smoke else ("met" if limit_met(run) else "MISSED")
        )
        row["file"] = run.run_id
        rows.append(row)
    return pd.DataFrame(rows)


ACCURACY_FORMATS = {"test accuracy (%)": fixed(2), "train + evaluate (s)": fixed(1)}


def target_table(runs: list[AccuracyRun], targets=policy.ACCURACY_TARGETS) -> pd.DataFrame:
    """One row per accuracy target of ``nnbench.policy``: the quickest eligible full (non-smoke)
    run's time to the threshold, and the verdict."""
    rows = []
    for target in targets:
        eligible = [
            r
            for r in runs
            if not r.smoke
            and target.applies_to(r.dataset, r.kernel, str(r.data.get("preset") or "") or None)
        ]
        reached = [(time_to(r, target.accuracy), r) for r in eligible]
        reached = [(t, r) for t, r in reached if t is not None]
        best = min(reached, key=lambda tr: tr[0]) if reached else None
        seconds = best[0] if best else math.nan
        if not eligible:
            verdict = "not measured"
        elif best is None:
            verdict = "MISSED (never reached)"
        else:
            verdict = policy.judge(seconds, target.seconds, higher=False)
        rows.append(
            {
                "target": target.name,
                "judged on": "the quickest run of any kernel"
                if target.scope == "fastest"
                else f"the {target.scope} run",
                "kernel": best[1].kernel if best else "—",
                "time to threshold (s)": seconds,
                "verdict": verdict,
                "runs": len(eligible),
                "best run": best[1].run_id if best else "—",
            }
        )
    return pd.DataFrame(rows)


TARGET_FORMATS = {"time to threshold (s)": fixed(1), "runs": str}


def twin_table(runs: list[AccuracyRun]) -> pd.DataFrame:
    """Engine vs the same network in pure torch, for accuracy runs that trained the twin too.

    Newer runs record the ratio of medians of interleaved training steps (``step_rounds``),
    older ones only whole training times, one run of each: the table says which it is."""
    target = next(t for t in policy.SPEED_TARGETS if t.metric == "engine_overhead")
    rows = []
    for run in runs:
        twin = run.data.get("torch_twin")
        if not twin:
            continue
        ratio = _float(twin.get("ratio"))
        stepped = isinstance(twin.get("step_rounds"), int)
        one_run = _float(twin.get("run_ratio")) if stepped else ratio
        rows.append(
            {
                "dataset": DATASET_TITLES.get(run.dataset, run.dataset),
                "kernel": run.kernel,
                "preset": run.data.get("preset", ""),
                "smoke": "yes" if run.smoke else "no",
                "engine / torch": ratio,
                "measured as": twin_measured_as(twin),
                "whole training, one run each": one_run,
                "pure torch train (s)": float(twin["seconds"]),
                f"target ≤ {target.threshold:g}×": "n/a (smoke)"
                if run.smoke
                else policy.judge(ratio, target.threshold, target.higher),
                "engine test acc. (%)": 100.0 * run.data["final_test_accuracy"],
                "torch test acc. (%)": 100.0 * _float(twin.get("final_test_accuracy")),
                "file": run.run_id,
            }
        )
    return pd.DataFrame(rows)


TWIN_FORMATS = {
    "engine / torch": times,
    "whole training, one run each": times,
    "pure torch train (s)": fixed(1),
    "engine test acc. (%)": fixed(2),
    "torch test acc. (%)": fixed(2),
}
