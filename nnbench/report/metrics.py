"""The speed metrics of ``nnbench.policy`` and the tables behind them, per column.

A column is a machine at one thread count (``tables.benchmark_frame``). Each metric returns a
``Measured``: the value, whether every input it needs was measured, and how it was obtained.

* ``ratio_to_torch``: geometric mean over the recipe's conv passes (layers x forward,
  grad_inputs, grad_kernels) of torch's median / the backend's median;
* ``distance_to_bound``: geometric mean over the same passes of the backend's median / the
  median of its own GEMMs replayed alone (``gemm_bound_s``), both from the rounds that
  interleave the two (``gemm_bound_call_s``; the benchmark's own median in older runs);
* ``scaling_vs_gemm``: geometric mean over the scaling group's (layer, pass) of the backend's
  speed-up from 1 thread to the most threads / the bare GEMM's speed-up over the same counts;
  judged in the column of the machine at its most threads;
* ``slowdown_with_threads``: the largest, over the steps up the scaling group's thread ladder
  and the step from the cores to more threads than cores (the oversubscribed test, same
  rounds), of the geometric mean over the recipe's (layer, pass) of the backend's median after
  the step / before it (``step_ratios``); judged in the column of the machine at its most
  threads, and complete only with the oversubscribed step (a 1-core machine has no ladder);
* ``engine_overhead``: the overhead benchmark's engine median / plain-torch twin median;
* ``faster_than_im2col``: im2col's median / the backend's on the forward pass of the recipe's
  conv2 and conv3 and the channel sweep's c64 layer, the smallest of the three;
* ``auto_vs_fastest``: the largest, over the benchmarked (case, pass), of auto's time / the
  fastest single backend's: the median over rounds of the per-round ratio where auto's rounds
  timed both (``_against_fastest``);
* ``auto_step_vs_fastest``: the same for the CIFAR-10 fast training step.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from nnbench import policy
from nnbench.bench.runner import CONTROL
from nnbench.report import tables
from nnbench.report.tables import CONV_PASSES, NOT_ALGORITHMS, geomean, sig

#: The suites that time the recipe layers at other thread counts than the run's own.
THREAD_SUITES = ("scaling", "oversubscribed")
#: The layers the ``faster_than_im2col`` target names: (suite, label ending).
WINOGRAD_LAYERS = (("recipe", "conv2"), ("recipe", "conv3"), ("channels", "c64"))


@dataclass(frozen=True)
class Measured:
    value: float  # NaN: not measured
    complete: bool  # every input the metric needs was there
    detail: str  # how it was obtained, or what is missing

    @property
    def measured(self) -> bool:
        return self.complete and math.isfinite(self.value)


def _missing(detail: str) -> Measured:
    return Measured(math.nan, False, detail)


def _recipe(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame[
        (frame["column"] == column) & (frame["suite"] == "recipe") & frame["pass"].isin(CONV_PASSES)
    ]


def ratio_to_torch(frame: pd.DataFrame, column: str, backend: str) -> Measured:
    rows = _recipe(frame, column)
    needed = len(rows[["label", "pass"]].drop_duplicates())
    mine = rows[(rows["backend"] == backend) & rows["vs_torch"].notna()]
    if mine.empty:
        return _missing(f"no recipe records of {backend} beside torch")
    return Measured(
        geomean(mine["vs_torch"]),
        len(mine) == needed,
        f"geometric mean over {len(mine)} of {needed} recipe passes",
    )


def distance_to_bound(frame: pd.DataFrame, column: str, backend: str) -> Measured:
    rows = _recipe(frame, column)
    mine = rows[rows["backend"] == backend]
    bound = mine[mine["gemm_bound_s"].notna() & (mine["gemm_bound_s"] > 0)]
    if bound.empty:
        return _missing(f"no GEMM bound recorded for {backend} (an older run)")
    detail = f"geometric mean over {len(bound)} recipe passes"
    if bound["gemm_bound_call_s"].isna().any():
        detail += f"; {OLD_REPLAY}"
    return Measured(geomean(_over_bound(bound)), len(bound) == len(mine), detail)


#: What a run made before commit 77e53f3 measured as the bound (no ``gemm_bound_call_s``).
OLD_REPLAY = (
    "older replay (a fresh operand for every GEMM, read from memory where the call found it in "
    "cache): its bound is too large, so this distance is too small"
)


def _over_bound(rows: pd.DataFrame) -> pd.Series:
    """Each record's call / its GEMMs alone: the call's median in the rounds that interleaved it
    with the replay (``gemm_bound_call_s``), else (a run made before that was recorded, with the
    older replay: ``OLD_REPLAY``) the benchmark's own median."""
    call = rows["gemm_bound_call_s"].fillna(rows["median_s"])
    return call / rows["gemm_bound_s"]


def scaling_top(frame: pd.DataFrame) -> dict[str, str]:
    """Machine -> the column (its most threads) its scaling group is judged in."""
    rows = frame[frame["suite"] == "scaling"]
    return {
        machine: group.loc[group["threads"].astype(float).idxmax(), "column"]
        for machine, group in rows.groupby("machine", sort=False)
    }


def speedups(frame: pd.DataFrame, machine: str) -> pd.DataFrame:
    """Per (layer, pass, backend) of ``machine``'s scaling group: the median at each thread
    count, the speed-up from the fewest to the most threads, the bare GEMM's speed-up over the
    same counts on the same layer, and the ratio of the two. The GEMM's speed-up comes from its
    medians in the backend's own rounds where the records have them ("same rounds": drift
    between the records of two thread counts cancels), else from the GEMM's own records."""
    rows = frame[(frame["suite"] == "scaling") & (frame["machine"] == machine)]
    if rows.empty:
        return pd.DataFrame()
    gemm = {}
    for label, group in rows[rows["backend"] == "gemm"].groupby("label", sort=False):
        gemm[label] = _speedup(group)
    table = []
    for (label, pass_, backend), group in rows.groupby(["label", "pass", "backend"], sort=False):
        low, high, speedup = _speedup(group)
        reference = gemm.get(label, (None, None, math.nan))[2]
        timed = "own records" if label in gemm else "no GEMM"
        beside = _gemm_beside(group)
        if beside is not None and backend != "gemm":
            reference, timed = beside, "same rounds"
        line = {"layer": label, "pass": pass_, "backend": backend}
        for _, r in group.sort_values("threads").iterrows():
            line[f"{int(r['threads'])} thr"] = r["median_ms"]
        line.update(
            {
                "threads": f"{low}→{high}",
                "speed-up": speedup,
                "GEMM speed-up": reference,
                # one thread count (a run of the top count alone) is no speed-up
                "ratio to GEMM": speedup / reference
                if backend != "gemm" and high > low
                else math.nan,
                "GEMM timed": timed if backend != "gemm" else "",
            }
        )
        table.append(line)
    frame_ = pd.DataFrame(table)
    backends = tables.backend_order(frame_["backend"])
    labels = list(dict.fromkeys(rows["label"]))
    keys = frame_.apply(
        lambda r: (
            labels.index(r["layer"]),
            tables.PASS_ORDER.index(r["pass"]),
            backends.index(r["backend"]),
        ),
        axis=1,
    )
    return frame_.loc[keys.sort_values().index].reset_index(drop=True)


def _gemm_beside(group: pd.DataFrame) -> float | None:
    """The bare GEMM's speed-up from the fewest to the most threads, from its medians in the
    backend's own rounds at each count (None where either record lacks them)."""
    ordered = group.sort_values("threads")
    medians = []
    for beside in (ordered.iloc[0]["beside_median_s"], ordered.iloc[-1]["beside_median_s"]):
        if not isinstance(beside, dict) or not beside.get("gemm"):
            return None
        medians.append(beside["gemm"])
    return medians[0] / medians[1]


def _speedup(group: pd.DataFrame) -> tuple[int, int, float]:
    ordered = group.sort_values("threads")
    first, last = ordered.iloc[0], ordered.iloc[-1]
    return int(first["threads"]), int(last["threads"]), first["median_s"] / last["median_s"]


def _judged_machine(frame: pd.DataFrame, column: str) -> str | None:
    """The machine whose scaling group is judged in ``column`` (its most threads), if any."""
    return next((m for m, top in scaling_top(frame).items() if top == column), None)


def scaling_vs_gemm(frame: pd.DataFrame, column: str, backend: str) -> Measured:
    machine = _judged_machine(frame, column)
    if machine is None:
        return _missing("no scaling group judged in this column")
    table = speedups(frame, machine)
    mine = table[(table["backend"] == backend) & table["ratio to GEMM"].notna()]
    if mine.empty:
        return _missing(f"no scaling records of {backend}")
    span = mine["threads"].iloc[0]
    timed = mine["GEMM timed"].value_counts()
    return Measured(
        geomean(mine["ratio to GEMM"]),
        True,
        f"geometric mean over {len(mine)} (layer, pass), threads {span}; GEMM timed "
        + ", ".join(f"{how} {count}" for how, count in timed.items()),
    )


def oversubscription(frame: pd.DataFrame, machine: str) -> pd.DataFrame:
    """Per (layer, pass, backend) of ``machine``'s oversubscribed test: the median at the cores
    and at more threads than cores, from the same rounds, their ratio, and the BLAS and torch
    thread counts in force during the oversubscribed calls (as the record read them).

    The ratio is paired where the record has both calls' times round by round: the median,
    over the rounds, of the oversubscribed time / the time at the cores in the same round (a
    drift of the machine during the test cancels out). Else it is the ratio of the medians."""
    rows = frame[(frame["suite"] == "oversubscribed") & (frame["machine"] == machine)]
    table = []
    for _, r in rows.iterrows():
        beside = r["beside_median_s"] if isinstance(r["beside_median_s"], dict) else {}
        at_cores = beside.get("cores") or math.nan
        rounds = r["beside_rounds_s"] if isinstance(r["beside_rounds_s"], dict) else {}
        mine, theirs = r["rounds_s"], rounds.get("cores")
        # rounds_s is None or a non-empty list (tables._seconds)
        paired = isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs)
        ratio = _paired(mine, theirs) if paired else r["median_s"] / at_cores
        table.append(
            {
                "layer": r["label"],
                "pass": r["pass"],
                "backend": r["backend"],
                "threads": f"{_count(r['cores_threads'])}→{_count(r['threads'])}",
                "in force (BLAS/torch)": f"{_count(r['blas_threads'])}/{_count(r['torch_threads'])}",
                "at the cores (ms)": at_cores * 1e3,
                "oversubscribed (ms)": r["median_ms"],
                "ratio": ratio,
                "ratio of": "rounds" if paired else "medians",
            }
        )
    return pd.DataFrame(table)


def _count(value: object) -> str:
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "?"


STEP_COLUMNS = ["backend", "step", "layer", "pass", "ratio"]


def step_ratios(frame: pd.DataFrame, machine: str) -> pd.DataFrame:
    """Per backend, step in threads and recipe (layer, pass) of ``machine``: the median after
    the step / the median before it (below 1: faster with more threads). Steps are "1→2",
    "2→4", ... up the scaling group's ladder, from the records of each count (which, in a frame
    that merges runs, may come from different runs), and "2→4 oversubscribed", from the
    oversubscribed test (medians of the same rounds). Sorted by backend, then step."""
    rows = frame[(frame["suite"] == "scaling") & (frame["machine"] == machine)]
    out = []
    for backend, mine in rows[rows["backend"] != "gemm"].groupby("backend", sort=False):
        medians = {
            (r["label"], r["pass"], int(r["threads"])): r["median_s"] for _, r in mine.iterrows()
        }
        counts = sorted({threads for _, _, threads in medians})
        for low, high in itertools.pairwise(counts):
            for (label, pass_, threads), median in medians.items():
                if threads == low and (label, pass_, high) in medians:
                    ratio = medians[(label, pass_, high)] / median
                    out.append([backend, f"{low}→{high}", label, pass_, ratio])
    for _, r in oversubscription(frame, machine).iterrows():
        out.append([r["backend"], f"{r['threads']} oversubscribed", r["layer"], r["pass"],
                    r["ratio"]])  # fmt: skip
    table = pd.DataFrame(out, columns=STEP_COLUMNS)
    if table.empty:
        return table
    backends = tables.backend_order(table["backend"])
    keys = table.apply(lambda r: (backends.index(r["backend"]), _step_order(r["step"])), axis=1)
    return table.loc[keys.sort_values().index].reset_index(drop=True)


def _step_order(step: str) -> tuple[float, bool]:
    """Sort key of a step: "2→4", then "2→4 oversubscribed", then "4→8"; unknown starts last."""
    start = step.split("→", 1)[0]
    return (float(start) if start.isdigit() else math.inf, step.endswith("oversubscribed"))


def thread_steps(frame: pd.DataFrame, machine: str) -> pd.DataFrame:
    """One row per backend of ``machine``, one column per step in threads (``step_ratios``,
    in order): the geometric mean of the step's ratios over the recipe's (layer, pass)."""
    ratios = step_ratios(frame, machine)
    if ratios.empty:
        return pd.DataFrame()
    steps = list(dict.fromkeys(sorted(ratios["step"], key=_step_order)))
    table = []
    for backend, mine in ratios.groupby("backend", sort=False):
        by_step = {step: geomean(group["ratio"]) for step, group in mine.groupby("step")}
        table.append({"backend": backend} | {step: by_step.get(step, math.nan) for step in steps})
    return pd.DataFrame(table, columns=["backend", *steps])


def slowdown_with_threads(frame: pd.DataFrame, column: str, backend: str) -> Measured:
    machine = _judged_machine(frame, column)
    if machine is None:
        return _missing("no scaling group judged in this column")
    ratios = step_ratios(frame, machine)
    mine = ratios[(ratios["backend"] == backend) & ratios["ratio"].notna()]
    if mine.empty:
        return _missing(f"no step in threads measured for {backend}")
    steps = {step: geomean(group["ratio"]) for step, group in mine.groupby("step", sort=False)}
    worst = max(steps, key=steps.get)
    single = mine.loc[mine["ratio"].idxmax()]
    oversubscribed = any(step.endswith("oversubscribed") for step in steps)
    detail = (
        f"largest at {worst} threads; "
        + ", ".join(f"{step} {value:.2f}×" for step, value in steps.items())
        + f"; slowest single (layer, pass): {single['layer']} {single['pass']} at "
        f"{single['step']}, {single['ratio']:.2f}×"
    )
    if not oversubscribed:
        detail += "; no oversubscribed step measured"
    return Measured(float(steps[worst]), oversubscribed, detail)


def engine_overhead(frame: pd.DataFrame, column: str, backend: str = "torch") -> Measured:
    rows = frame[(frame["column"] == column) & (frame["suite"] == "overhead")]
    rows = rows[rows["ratio"].notna()]
    if rows.empty:
        return _missing("no overhead benchmark")
    row = rows.iloc[0]
    return Measured(
        float(row["ratio"]),
        True,
        f"{row['label']}: engine {sig(row['median_ms'])} ms / twin "
        f"{sig(row['twin_median_s'] * 1e3)} ms per step",
    )


def faster_than_im2col(frame: pd.DataFrame, column: str, backend: str) -> Measured:
    rows = frame[(frame["column"] == column) & (frame["pass"] == "forward")]
    ratios, missing = [], []
    for suite, ending in WINOGRAD_LAYERS:
        layer = rows[(rows["suite"] == suite) & rows["label"].str.endswith(ending)]
        medians = dict(zip(layer["backend"], layer["median_s"]))
        if backend in medians and "im2col" in medians:
            ratios.append((medians["im2col"] / medians[backend], ending))
        else:
            missing.append(ending)
    if not ratios:
        return _missing(f"no forward records of {backend} and im2col on those layers")
    value, where = min(ratios)
    detail = f"smallest at {where}" + (
        f"; not benchmarked: {', '.join(missing)}" if missing else ""
    )
    return Measured(value, not missing, detail)


def _against_fastest(auto: pd.Series, single: pd.DataFrame, failed=frozenset()) -> dict | None:
    """auto's record against the fastest single backend of its group (None: nothing to compare
    it with).

    Three ways, the first the record allows ("timed" says which):
    * "paired": auto and the backends were timed in the same rounds (``beside_rounds_s`` has
      auto's own times too): the fastest is the backend of smallest median there, and the ratio
      is the median, over the rounds, of auto's time / that backend's in the same round. Where
      the rounds also timed the chosen backend a second time (``CONTROL``), "control / choice"
      is the same statistic for those two identical calls: the resolution of the ratio;
    * "interleaved": auto's rounds timed the backends just before auto's benchmarked call
      (``beside_median_s`` only): the ratio of auto's median to the fastest one there;
    * "separately": the separately timed records (machine drift between two benchmarks counts
      against auto too, and auto's call always follows others, which leave the caches cold).
    With passed single-backend records (``single``), the paired and interleaved ways count only
    where auto's rounds timed the suite's fastest backend, and only backends whose own record
    passed. Without (a run of auto alone), the paired way takes the backends of auto's rounds,
    its candidates, but not those whose own record ``failed``; "timed" says "paired
    (candidates)": no record of their own was checked in this run.
    """
    rounds = auto["beside_rounds_s"] if isinstance(auto["beside_rounds_s"], dict) else {}
    rounds = {n: t for n, t in rounds.items() if len(t)}
    backends = {n: t for n, t in rounds.items() if n not in ("auto", CONTROL, *failed)}
    passed = set(single["backend"])
    best = single.loc[single["median_s"].idxmin()] if not single.empty else None
    if best is not None:
        backends = {n: t for n, t in backends.items() if n in passed}
    if "auto" in rounds and backends and (best is None or best["backend"] in backends):
        fastest = min(backends, key=lambda name: statistics.median(backends[name]))
        mine, theirs = rounds["auto"], backends[fastest]
        timed = "paired" if best is not None else "paired (candidates)"
        row = _row(mine, theirs, fastest, _paired(mine, theirs), timed)
        chosen = rounds.get(auto["auto_choice"]) if isinstance(auto["auto_choice"], str) else None
        if CONTROL in rounds and chosen is not None:
            row["control / choice"] = _paired(rounds[CONTROL], chosen)
        return row
    if best is None:
        return None
    beside = auto["beside_median_s"] if isinstance(auto["beside_median_s"], dict) else {}
    beside = {name: s for name, s in beside.items() if name in passed}
    if best["backend"] in beside:
        fastest = min(beside, key=beside.get)
        return _row(auto["median_s"], beside[fastest], fastest, None, "interleaved")
    return _row(auto["median_s"], best["median_s"], best["backend"], None, "separately")


def _paired(mine: list[float], theirs: list[float]) -> float:
    """The median over rounds of mine / theirs in the same round."""
    return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))


def _row(mine, theirs, fastest: str, paired: float | None, timed: str) -> dict:
    """A row of ``auto_choices``: ``mine`` and ``theirs`` are seconds (per-round lists when
    ``paired``, medians otherwise)."""
    auto_s = statistics.median(mine) if paired is not None else mine
    fastest_s = statistics.median(theirs) if paired is not None else theirs
    return {
        "auto (ms)": auto_s * 1e3,
        "fastest single backend": fastest,
        "its median (ms)": fastest_s * 1e3,
        "auto / fastest": paired if paired is not None else auto_s / fastest_s,
        "timed": timed,
    }


def auto_choices(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per benchmarked (case, pass) with an ``auto`` record: its choice, what its trial did to
    the race's ("kept", "from <the race's choice>", "—" where there was no trial), its median,
    the fastest single backend's and the ratio (``_against_fastest``); an auto record whose
    rounds timed its candidates is judged without single-backend records (a run of auto
    alone)."""
    rows = frame[(frame["column"] == column) & frame["pass"].isin(CONV_PASSES)]
    table = []
    for (suite, label, pass_), group in rows.groupby(["suite", "label", "pass"], sort=False):
        ok = tables.not_failed(group)  # a failed result is not a fast one
        auto = group[ok & (group["backend"] == "auto")]
        single = group[ok & ~group["backend"].isin(NOT_ALGORITHMS)]
        failed = frozenset(group.loc[~ok, "backend"])
        if auto.empty:
            continue
        a = auto.iloc[0]
        row = _against_fastest(a, single, failed)
        if row is not None:
            choice, race = a["auto_choice"], a["auto_race"]
            ran = choice if isinstance(choice, str) and choice else "—"  # None or NaN: unknown
            trial = "—" if not isinstance(race, str) else "kept" if race == ran else f"from {race}"
            table.append(
                {"suite": suite, "case": label, "pass": pass_, "auto ran": ran, "trial": trial}
                | row
            )
    return pd.DataFrame(table)


def auto_vs_fastest(frame: pd.DataFrame, column: str, backend: str = "auto") -> Measured:
    table = auto_choices(frame, column)
    if table.empty:
        return _missing("no auto records")
    worst = table.loc[table["auto / fastest"].idxmax()]
    timed = table["timed"].value_counts()
    detail = (
        f"largest at {worst['case']} {worst['pass']}, over {len(table)} (case, pass); timed "
        + ", ".join(f"{how} {count}" for how, count in timed.items())
    )
    # Where auto ran the fastest backend itself, its ratio is the resolution of the measurement
    # (as the control's); where it ran another, the cost of its choice.
    known = table["auto ran"] != "—"  # records made before auto's choice was recorded: unknown
    itself = known & (table["auto ran"] == table["fastest single backend"])
    detail += f"; auto ran the fastest backend in {int(itself.sum())} of {int(known.sum())}"
    for where, rows in (
        ("where it did", table[itself]),
        ("where it ran another", table[known & ~itself]),
    ):
        if not rows.empty:
            top = rows.loc[rows["auto / fastest"].idxmax()]
            detail += (
                f", largest {where} {tables.times(top['auto / fastest'])} ({top['case']} "
                f"{top['pass']}, {top['auto ran']} against {top['fastest single backend']})"
            )
    tried = table[table["trial"] != "—"]
    if not tried.empty:
        changed = int(tried["trial"].str.startswith("from ").sum())
        detail += f"; the trial changed the race's choice in {changed} of {len(tried)}"
    control = table.get("control / choice", pd.Series(dtype=float)).dropna()
    if not control.empty:  # what two identical calls in the same rounds give: the resolution
        detail += (
            f"; the chosen backend against itself in the same rounds ({CONTROL}): "
            f"{tables.times(control.min())} to {tables.times(control.max())}, median "
            f"{tables.times(control.median())}, over {len(control)}"
        )
    return Measured(float(worst["auto / fastest"]), True, detail)


#: The training step the ``auto_step_vs_fastest`` target names.
AUTO_STEP_MODEL = "cifar10-fast"


def auto_step_vs_fastest(frame: pd.DataFrame, column: str, backend: str = "auto") -> Measured:
    steps = frame[
        (frame["column"] == column)
        & (frame["suite"] == "step")
        & (frame["label"] == AUTO_STEP_MODEL)
    ]
    ok = tables.not_failed(steps)  # a failed result is not a fast one
    auto = steps[ok & (steps["backend"] == backend)]
    single = steps[ok & ~steps["backend"].isin(NOT_ALGORITHMS)]
    failed = frozenset(steps.loc[~ok, "backend"])
    # without single-backend steps that passed (a run of auto alone), against the models timed
    # in auto's rounds but those that failed, as ``auto_choices`` does
    best = _against_fastest(auto.iloc[0], single, failed) if not auto.empty else None
    if best is None:
        return _missing(f"no {AUTO_STEP_MODEL} training steps of auto and a single backend")
    return Measured(
        float(best["auto / fastest"]),
        True,
        f"auto {sig(best['auto (ms)'])} ms / {best['fastest single backend']} "
        f"{sig(best['its median (ms)'])} ms per step, timed {best['timed']}",
    )


METRIC_FUNCTIONS = {
    "ratio_to_torch": ratio_to_torch,
    "distance_to_bound": distance_to_bound,
    "scaling_vs_gemm": scaling_vs_gemm,
    "slowdown_with_threads": slowdown_with_threads,
    "engine_overhead": engine_overhead,
    "faster_than_im2col": faster_than_im2col,
    "auto_vs_fastest": auto_vs_fastest,
    "auto_step_vs_fastest": auto_step_vs_fastest,
}


def measure(frame: pd.DataFrame, column: str, target: policy.SpeedTarget) -> Measured:
    """``target``'s metric in ``column``; a metric this report cannot compute is not measured."""
    function = METRIC_FUNCTIONS.get(target.metric)
    if function is None:
        return _missing(f"the report does not compute the metric {target.metric!r}")
    return function(frame, column, target.scope)


def target_columns(frame: pd.DataFrame) -> list[str]:
    """The columns a target can be judged in: any with records outside the scaling group (and
    its oversubscribed test), and each scaling group's column of most threads."""
    if frame.empty:
        return []
    judged = set(frame.loc[~frame["suite"].isin(THREAD_SUITES), "column"]) | set(
        scaling_top(frame).values()
    )
    return [c for c in tables.column_order(frame) if c in judged]


@dataclass(frozen=True)
class Judged:
    target: policy.SpeedTarget
    column: str
    measured: Measured
    run: str | None = None  # the run judged alone (``judge_runs``); None: the merged column

    @property
    def verdict(self) -> str:
        if not self.measured.complete:
            return "not measured"
        return policy.judge(self.measured.value, self.target.threshold, self.target.higher)


def judge_all(frame: pd.DataFrame, targets=policy.SPEED_TARGETS) -> list[Judged]:
    """Every speed target in every column."""
    return [
        Judged(target, column, measure(frame, column, target))
        for target in targets
        for column in target_columns(frame)
    ]


def judge_runs(
    frame: pd.DataFrame, order: list[str] | None = None, targets=policy.SPEED_TARGETS
) -> dict[tuple, list[Judged]]:
    """Every speed target judged on each run alone (``frame``: ``benchmark_frame(runs,
    merge=False)``; runs in ``order``, by default as they come), as {(target key, column): the
    runs' judgements where it was measured}, in the columns the merged runs are judged in (a
    run of the scaling group at fewer threads is not judged in a column of its own)."""
    columns = set(target_columns(frame))
    by_run: dict[tuple, list[Judged]] = {}
    for run_id in order if order is not None else dict.fromkeys(frame["run"]):
        for j in judge_all(frame[frame["run"] == run_id], targets):
            if j.verdict != "not measured" and j.column in columns:
                by_run.setdefault((j.target.key, j.column), []).append(replace(j, run=run_id))
    return by_run


def over_runs(judged: list[Judged], by_run: dict[tuple, list[Judged]]) -> list[Judged]:
    """The judgements the report states: where two or more runs measured a target in a column
    (each alone, ``judge_runs``), on the middle of their values, the median, or of an even
    count the worse of the two middle values: the target is met when it holds in more than half
    of the runs, whichever of them came last. Elsewhere (one run, or no run measuring it in
    full) the merged column's, as ``judge_all`` gave it. The detail keeps the merged value."""
    stated = []
    for j in judged:
        runs = by_run.get((j.target.key, j.column), [])
        if len(runs) < 2:
            stated.append(j)
            continue
        ordered = sorted(runs, key=lambda r: r.measured.value, reverse=j.target.higher)
        middle = ordered[len(ordered) // 2]  # of the runs, best first
        merged = f"{j.measured.value:.2f}×" if math.isfinite(j.measured.value) else "none"
        detail = (
            f"middle of the values of {len(runs)} runs, each judged alone: {middle.run}, "
            f"{middle.measured.detail} (the runs merged, each benchmark's latest record: "
            f"{merged}; {j.measured.detail})"
        )
        stated.append(replace(j, measured=Measured(middle.measured.value, True, detail)))
    return stated


def runs_summary(runs: list[Judged]) -> str:
    """'met in 3 of 6 runs, 1.08× to 1.51×'."""
    values = [j.measured.value for j in runs]
    met = sum(j.verdict == "met" for j in runs)
    return f"met in {met} of {len(runs)} runs, {min(values):.2f}× to {max(values):.2f}×"


def speed_target_table(judged: list[Judged], by_run: dict | None = None) -> pd.DataFrame:
    """One row per target, one column per machine and thread count: 'value verdict', and where
    several runs measured it in that column, how many met it and their range (``judge_runs``)."""
    rows: dict[str, dict] = {}
    for j in judged:
        row = rows.setdefault(j.target.key, {"target": j.target.name})
        row[j.column] = _cell(j)
        runs = (by_run or {}).get((j.target.key, j.column), [])
        if len(runs) > 1:
            row[j.column] += f" ({runs_summary(runs)})"
    return pd.DataFrame(list(rows.values()))


def _cell(j: Judged) -> str:
    value = j.measured.value
    if not math.isfinite(value):
        return "not measured"
    text = f"{value:.2f}×"
    if j.verdict == "not measured":
        return f"{text} (partial: not measured)"
    return f"{text} {j.verdict}"


def winners(frame: pd.DataFrame) -> pd.DataFrame:
    """Per recipe layer and pass, in each column: the fastest backend and the fastest numpy
    backend (every backend but torch), with their medians. auto is left out (it runs one of
    the others), and so is a result that failed its check (a wrong result is not a fast one)."""
    rows = frame[
        (frame["suite"] == "recipe")
        & frame["pass"].isin(CONV_PASSES)
        & ~frame["backend"].isin(NOT_ALGORITHMS)
        & tables.not_failed(frame)
    ]
    found = []
    for (column, label, pass_), group in rows.groupby(["column", "label", "pass"], sort=False):
        group = group.sort_values("median_s")
        numpy_rows = group[group["backend"] != "torch"]
        best = group.iloc[0]
        second = numpy_rows.iloc[0] if not numpy_rows.empty else best
        found.append(
            {
                "column": column,
                "layer": label,
                "pass": pass_,
                "fastest": best["backend"],
                "fastest_ms": best["median_ms"],
                "numpy": second["backend"],
                "numpy_ms": second["median_ms"],
            }
        )
    return pd.DataFrame(found)


def fastest(frame: pd.DataFrame) -> pd.DataFrame:
    """``winners`` as a table: rows (layer, pass), one column per machine and thread count;
    the fastest numpy backend follows where torch is the fastest."""
    found = winners(frame)
    if found.empty:
        return pd.DataFrame()
    table: dict[tuple, dict] = {}
    for w in found.to_dict("records"):
        text = f"{tables.backend_cell(w['fastest'], (), w['pass'])} {sig(w['fastest_ms'])} ms"
        if w["numpy"] != w["fastest"]:
            name = tables.backend_cell(w["numpy"], (), w["pass"])
            text += f"; numpy: {name} {sig(w['numpy_ms'])} ms"
        table.setdefault((w["layer"], w["pass"]), {"layer": w["layer"], "pass": w["pass"]})
        table[(w["layer"], w["pass"])][w["column"]] = text
    out = pd.DataFrame(list(table.values()))
    columns = [c for c in tables.column_order(frame) if c in out]
    return out[["layer", "pass", *columns]].fillna("—")


def bound_table(frame: pd.DataFrame, failed=()) -> pd.DataFrame:
    """Each numpy backend's median against its own GEMMs replayed alone (both from the rounds
    that interleave them, ``_over_bound``), and where its time goes (shares of the profiled
    stage times, summed over threads)."""
    rows = frame[
        frame["pass"].isin(CONV_PASSES)
        & frame["suite"].isin(["recipe"])
        & frame["gemm_bound_s"].notna()
    ]
    table = []
    for (_, r), ratio in zip(rows.iterrows(), _over_bound(rows)):
        stages = r["breakdown_s"] or {}
        total = sum(stages.values())
        share = {
            name: 100.0 * sum(stages.get(s, 0.0) for s in parts) / total if total else math.nan
            for name, parts in STAGE_GROUPS.items()
        }
        table.append(
            {
                "machine · threads": r["column"],
                "case": r["label"],
                "pass": r["pass"],
                "backend": tables.backend_cell(r["backend"], failed, r["pass"]),
                "median (ms)": r["median_ms"],
                "call beside its GEMMs (ms)": r["gemm_bound_call_s"] * 1e3,
                "its GEMMs alone (ms)": r["gemm_bound_s"] * 1e3,
                "call / GEMMs": ratio,
                **{f"{name} %": value for name, value in share.items()},
            }
        )
    out = pd.DataFrame(table)
    if not out.empty and out["machine · threads"].nunique() == 1:
        out = out.drop(columns="machine · threads")
    return out


#: The profiler's stages (``kernels._profile``), grouped as the report shows them.
STAGE_GROUPS = {
    "layout copies": ("layout",),
    "GEMM": ("gemm",),
    "col2im / reduction": ("col2im", "reduction"),
    "FFT / transform": ("fft", "transform"),
}
BOUND_FORMATS = {"call / GEMMs": tables.times} | {
    f"{name} %": tables.fixed(0) for name in STAGE_GROUPS
}


def overhead_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The overhead benchmark of each column: engine and plain-torch step medians, their ratio
    and the target's verdict."""
    threshold = overhead_target().threshold
    rows = frame[(frame["suite"] == "overhead") & frame["ratio"].notna()]
    table = []
    for _, r in rows.iterrows():
        table.append(
            {
                "machine · threads": r["column"],
                "model": r["label"],
                "engine step (ms)": r["median_ms"],
                "engine IQR (% of median)": 100.0 * r["iqr_fraction"],
                "plain-torch step (ms)": r["twin_median_s"] * 1e3,
                "engine / torch": r["ratio"],
                f"target ≤ {threshold:g}×": policy.judge(r["ratio"], threshold, higher=False),
                "rounds": str(r["rounds"]),
            }
        )
    return pd.DataFrame(table)


def overhead_target() -> policy.SpeedTarget:
    return next(t for t in policy.SPEED_TARGETS if t.metric == "engine_overhead")


def scaling_curves(frame: pd.DataFrame, machine: str) -> pd.DataFrame:
    """Speed-up over the fewest threads, per layer, backend and thread count, geometric mean
    over the layer's passes, with the band its interquartile ranges give (the speed-up taking
    the slow quartile at one end and the fast one at the other) and whether any median in it
    was noisy."""
    rows = frame[(frame["suite"] == "scaling") & (frame["machine"] == machine)]
    out = []
    for (label, backend), group in rows.groupby(["label", "backend"], sort=False):
        base = {p: g.sort_values("threads").iloc[0] for p, g in group.groupby("pass", sort=False)}
        for threads, at in group.groupby("threads", sort=True):
            speed, low, high, noisy = [], [], [], False
            for _, r in at.iterrows():
                b = base[r["pass"]]
                speed.append(b["median_s"] / r["median_s"])
                low.append(_or(b["q1_s"], b["median_s"]) / _or(r["q3_s"], r["median_s"]))
                high.append(_or(b["q3_s"], b["median_s"]) / _or(r["q1_s"], r["median_s"]))
                noisy = noisy or bool(r["noisy"]) or bool(b["noisy"])
            out.append(
                {
                    "layer": label,
                    "backend": backend,
                    "threads": int(threads),
                    "speedup": geomean(speed),
                    "low": geomean(low),
                    "high": geomean(high),
                    "noisy": noisy,
                }
            )
    return pd.DataFrame(out)


def _or(value: float, default: float) -> float:
    return default if value is None or np.isnan(value) else value
