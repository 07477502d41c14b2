"""Assemble REPORT.md and its figures in memory, then put them in place file by file.

The head of the report is written here (stamp, at a glance, runs used, what is missing,
targets); its body, the benchmark, verification and accuracy sections, in ``sections``.

``render`` returns ``{file name: bytes}`` without touching the disk; ``publish`` writes each
file with an atomic rename (``nnbench._io``), figures first and REPORT.md last, so a reader
never sees a report that points at a figure not yet written, and an error anywhere before
``publish`` leaves the previous report untouched.

Every sentence with a number in it is generated from the data; where a measurement is missing
the report says so and how to produce it, and never states a number it did not measure.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nnbench._io import atomic_write_bytes
from nnbench.report import metrics, provenance, sections, tables
from nnbench.report.load import QUICK_NAME, VERIFICATION_NAME, AccuracyRun, BenchmarkRun, Inputs
from nnbench.report.sections import REPORT_COMMAND, Context

REPORT_NAME = "REPORT.md"


@dataclass
class Material:
    """What a report is made from: the inputs found, plus what this invocation computed."""

    inputs: Inputs
    verification: dict | None = None  # a verification payload (see verify.run)
    quick_payload: dict | None = None  # the quick run made now, to keep beside the report
    no_run: bool = False
    machine: dict = field(default_factory=dict)  # machine_info() of the machine rendering
    now: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))


@dataclass
class Rendered:
    """Every output file of a report, in memory, what it says is missing, and what failed."""

    files: dict[str, bytes]
    missing: list[str]
    failures: dict[str, list[str]]


def render(material: Material) -> Rendered:
    """Every output file of the report (``{name: content}``), nothing written yet."""
    from nnbench.report import payload_bytes

    inputs = material.inputs
    frame = tables.benchmark_frame(inputs.benchmark_runs)
    by_run = metrics.judge_runs(
        tables.benchmark_frame(inputs.benchmark_runs, merge=False),
        [run.run_id for run in tables.in_date_order(inputs.benchmark_runs)],
    )
    ctx = Context(
        material=material,
        frame=frame,
        failures=tables.failures(frame, material.verification),
        judged=metrics.over_runs(metrics.judge_all(frame), by_run),
        by_run=by_run,
    )
    quick = material.quick_payload
    summary = quick["nnbench_quick"] if quick is not None else {"pytest_exit_code": 0}
    if summary["pytest_exit_code"] != 0 and tables.failed_records(frame).empty:
        ctx.failures.setdefault("(quick run)", []).append(
            f"pytest exited with code {summary['pytest_exit_code']} and no record says why ("
            + ("; ".join(summary.get("pytest_summary") or []) or "no summary")
            + "): run `pytest --benchmark-only -m quick` to see the error"
        )
    body = (
        _targets_section(ctx)
        + sections.benchmarks(ctx)
        + sections.verification(ctx)
        + sections.accuracy(ctx)
    )
    if quick is not None:
        ctx.files[QUICK_NAME] = payload_bytes(quick)
    if material.verification is not None and not material.verification.get("loaded_from"):
        ctx.files[VERIFICATION_NAME] = payload_bytes(material.verification)
    head = _stamp(material) + _at_a_glance(ctx) + _runs_used(ctx)
    if ctx.missing or inputs.notes:
        head += ["## What is missing", ""]
        head += [f"- {line}" for line in ctx.missing]
        head += [f"- Note: {line}" for line in inputs.notes]
        head.append("")
    text = "\n".join(head + body).rstrip() + "\n"
    ctx.files[REPORT_NAME] = text.encode("utf-8")
    return Rendered(files=ctx.files, missing=ctx.missing, failures=ctx.failures)


def publish(files: dict[str, bytes], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``files`` into ``out_dir``, each atomically, REPORT.md last."""
    out = Path(out_dir)
    order = sorted(files, key=lambda name: (name == REPORT_NAME, name))
    return [atomic_write_bytes(out / name, files[name]) for name in order]


# --- stamp ----------------------------------------------------------------------------------


def _threads_text(machine: dict, short: bool = False) -> str:
    threads = machine.get("threads") or {}
    if not isinstance(threads, dict):
        return "—"
    parts = []
    for pool in threads.get("blas") or []:
        name = "BLAS" if short else f"BLAS {pool.get('library')} {pool.get('version') or ''}"
        parts.append(f"{name.rstrip()}: {pool.get('threads')}" + ("" if short else " threads"))
    parts.sort()  # the pools come in the order the libraries were loaded, which varies
    if threads.get("torch_threads") is not None:
        parts.append(f"torch: {threads['torch_threads']}" + ("" if short else " threads"))
    return ", ".join(dict.fromkeys(parts)) or ("—" if short else "unknown")


def _versions_text(machine: dict) -> str:
    versions = machine.get("versions") or {}
    return ", ".join(f"{name} {version}" for name, version in versions.items()) or "unknown"


def _settings_text(machine: dict) -> str:
    """The performance-relevant environment variables that are set, and any library that was
    loaded before ``kernels`` set its thread variables (it ran without them)."""
    environment = machine.get("environment") or {}
    text = ", ".join(f"`{name}={value}`" for name, value in environment.items() if value)
    missed = machine.get("thread_settings_missed_by") or []
    if missed:
        text += f" (loaded before these were set, so running without them: {', '.join(missed)})"
    return text or "none recorded"


def _stamp(material: Material) -> list[str]:
    m = material.machine
    head = provenance.head()
    source = m.get("source") or {}
    code = (
        f"HEAD {provenance.short_commit(head)}"
        + (" with uncommitted changes" if source.get("dirty") else "")
        if head
        else "not a git checkout"
    )
    return [
        "# nnbench report",
        "",
        f"Generated {material.now.strftime('%Y-%m-%d %H:%M:%S UTC')} by {REPORT_COMMAND}"
        + (" with `--no-run`" if material.no_run else "")
        + f" from the code at {code}.",
        "",
        "This machine (where the verification runs and the report was made):",
        "",
        (
            f"- **Machine**: {m.get('cpu_model', 'unknown CPU')}, {m.get('cores', '?')} cores "
            f"({m.get('platform', '')})"
        ),
        f"- **Threads**: {_threads_text(m)}",
        f"- **Settings**: {_settings_text(m)}",
        f"- **Versions**: {_versions_text(m)}",
        "",
    ]


# --- provenance of the runs -----------------------------------------------------------------


def _run_status(run: BenchmarkRun | AccuracyRun) -> provenance.CodeStatus:
    if isinstance(run, BenchmarkRun):
        commit, dirty, note = provenance.recorded_source(run.machine, run.commit)
        return provenance.code_status(commit, dirty, note, provenance.SUITE_CODE)
    commit, dirty, note = provenance.recorded_source(run.data.get("machine") or {})
    return provenance.code_status(commit, dirty, note, provenance.PACKAGE_CODE)


def _columns_of(frame: pd.DataFrame, run_id: str) -> str:
    if frame.empty:
        return "—"
    columns = tables.column_order(frame[frame["run"] == run_id])
    return "; ".join(columns) or "—"


def _runs_used(ctx: Context) -> list[str]:
    material = ctx.material
    rows, statuses = [], []
    entries = []
    for run in material.inputs.benchmark_runs:
        entries.append(
            (
                "benchmark (quick set)"
                if run.quick
                else "benchmark, old record schema"
                if run.old_schema
                else "benchmark",
                run,
                run.machine,
                run.datetime,
                len(run.records),
            )
        )
    for run in material.inputs.accuracy_runs:
        machine = run.data.get("machine") or {}
        kind = f"accuracy {run.dataset}" + (" (smoke)" if run.smoke else "")
        entries.append((kind, run, machine, run.datetime, len(run.data["history"])))
    for kind, run, machine, date, count in entries:
        status = _run_status(run)
        statuses.append((run.run_id, status))
        rows.append(
            {
                "kind": kind,
                "file": run.run_id,
                "shown as": _columns_of(ctx.frame, run.run_id)
                if isinstance(run, BenchmarkRun)
                else "—",
                "date": (date or "—")[:19],
                "machine": provenance.machine_label(machine),
                "BLAS kernels": provenance.blas_kernels(machine),
                "commit": provenance.short_commit(status.commit) or "—",
                "code since": {True: "changed", False: "unchanged", None: "unknown"}[
                    status.changed
                ],
                "entries": str(count),
            }
        )
    v = material.verification
    if v is not None:
        machine = v.get("machine") or {}
        source = provenance.recorded_source(machine)
        status = provenance.code_status(*source, provenance.VERIFICATION_CODE)
        statuses.append((v.get("loaded_from") or VERIFICATION_NAME, status))
        rows.append(
            {
                "kind": "verification",
                "file": v.get("loaded_from") or f"computed now ({VERIFICATION_NAME})",
                "shown as": "—",
                "date": str(v.get("date", "—"))[:19],
                "machine": provenance.machine_label(machine),
                "BLAS kernels": provenance.blas_kernels(machine),
                "commit": provenance.short_commit(status.commit) or "—",
                "code since": {True: "changed", False: "unchanged", None: "unknown"}[
                    status.changed
                ],
                "entries": str(len(v.get("checks", []))),
            }
        )
    if not rows:
        return ["## Runs used", "", "None: no result files were found.", ""]
    out = [
        "## Runs used",
        "",
        (
            "Each benchmark run is shown in the columns named under *shown as*: one per machine and "
            "thread count. *Code since* compares the commit a run recorded with HEAD over the "
            f"code it measured: {provenance.describe_paths(provenance.SUITE_CODE)} for a "
            f"benchmark run, {provenance.describe_paths(provenance.PACKAGE_CODE)} for an "
            f"accuracy run, {provenance.describe_paths(provenance.VERIFICATION_CODE)} for the "
            "verification (`git diff <commit> HEAD -- <those paths>`)."
        ),
        "",
        tables.markdown(pd.DataFrame(rows)),
        "",
    ]
    out += [
        f"- `{name}`: {status.text}." for name, status in statuses if status.changed is not False
    ]
    return out + [""]


def _provenance_warnings(ctx: Context) -> list[str]:
    """A warning when the benchmark results come from several machines or commits, and the
    runs (benchmark and accuracy) whose code changed since, or cannot be told."""
    inputs = ctx.material.inputs
    lines = []
    machines = sorted({provenance.machine_label(r.machine) for r in inputs.benchmark_runs})
    statuses = {run.run_id: _run_status(run) for run in inputs.benchmark_runs}
    commits = sorted({provenance.short_commit(s.commit) or "unrecorded" for s in statuses.values()})
    if len(machines) > 1 or len(commits) > 1:
        lines.append(
            "**Mixed sources**: the benchmark results shown together come from "
            + (
                f"{len(machines)} machines ({'; '.join(machines)})"
                if len(machines) > 1
                else "one machine"
            )
            + " and "
            + (
                f"{len(commits)} commits ({', '.join(commits)})"
                if len(commits) > 1
                else "one commit"
            )
            + ": compare within a column; across columns the machine, the threads or the code differ."
        )
    accuracy: dict[tuple, int] = {}
    for run in inputs.accuracy_runs:
        status = _run_status(run)
        if status.changed is not False:
            key = (status.changed, status.commit, status.head, status.reason)
            accuracy[key] = accuracy.get(key, 0) + 1
    changed = [
        f"`{name}` ({_change(s.changed, s.commit, s.head, s.reason)})"
        for name, s in statuses.items()
        if s.changed is not False
    ] + [f"{n} accuracy run(s) ({_change(*key)})" for key, n in accuracy.items()]
    if changed:
        lines.append(
            "**Code changed since these runs** (or cannot be told): "
            + "; ".join(changed)
            + ". Their numbers describe the code they ran, not HEAD; see *Runs used*."
        )
    return lines


def _change(changed: bool | None, commit: str | None, head: str | None, reason: str) -> str:
    if changed:
        return f"{provenance.short_commit(commit)} → {provenance.short_commit(head)}"
    return f"cannot tell: {reason}"


# --- summary --------------------------------------------------------------------------------


def _at_a_glance(ctx: Context) -> list[str]:
    """The user's questions, answered from the data: what failed, which targets are missed,
    which backend is fastest, where FFT overtakes, and where the numbers come from."""
    lines = [_failure_line(ctx)]
    lines += _target_lines(ctx)
    lines += _fastest_lines(ctx)
    lines += _crossover_lines(ctx)
    lines += _peak_lines(ctx)
    lines += _narrow_blas_lines(ctx)
    lines += _provenance_warnings(ctx)
    out = ["## At a glance", "", *[f"- {line}" for line in lines if line], ""]
    table = metrics.fastest(ctx.frame)
    if not table.empty:
        out += [
            (
                "Fastest backend per recipe layer and pass, in each column (median per call; where "
                "torch is fastest, the fastest numpy backend follows):"
            ),
            "",
            tables.markdown(table),
            "",
        ]
    return out


def _failure_line(ctx: Context) -> str:
    v = ctx.material.verification
    if ctx.failures:
        return (
            "**FAILED**: "
            + "; ".join(
                f"`{backend}`: {len(reasons)} failed check(s), first: {reasons[0]}"
                for backend, reasons in sorted(ctx.failures.items())
            )
            + ". Its timings are marked FAILED wherever they appear; see *Verification*."
        )
    checked = tables.failed_records(ctx.frame)
    with_verdicts = ctx.frame["passed"].notna().sum() if not ctx.frame.empty else 0
    parts = []
    if v is not None:
        s = tables.verification_summary(v)
        parts.append(
            f"every cell of the verification matrix passed ({s['cells']} backend × pass × "
            f"dtype cells, {s['comparisons']} comparisons with the float64 reference)"
        )
    else:
        parts.append("no verification was computed (`--no-run`)")
    if with_verdicts:
        parts.append(f"all {with_verdicts - len(checked)} benchmark records with a check passed it")
    return "No failures: " + "; ".join(parts) + "."


def _old_code_targets(judged: list[metrics.Judged]) -> str:
    """One line on the targets judged in columns of code changed since (not counted as HEAD's)."""
    by_column: dict[str, list[metrics.Judged]] = {}
    for j in judged:
        by_column.setdefault(j.column, []).append(j)
    return (
        "In columns of code changed since (not counted above): "
        + "; ".join(
            f"{column}: {sum(j.verdict == 'met' for j in js)} met, "
            f"{sum(j.verdict == 'MISSED' for j in js)} MISSED"
            for column, js in by_column.items()
        )
        + "."
    )


def _target_lines(ctx: Context) -> list[str]:
    lines = []
    old = tables.old_code_columns(ctx.frame)
    judged = [j for j in ctx.judged if j.column not in old]  # the code at HEAD
    missed = [j for j in judged if j.verdict == "MISSED"]
    met = [j for j in judged if j.verdict == "met"]
    unmeasured = [j for j in judged if j.verdict == "not measured"]
    if judged:
        columns = len({j.column for j in judged})
        text = (
            f"Speed targets (`nnbench.policy`), judged in each of {columns} column(s) of the "
            f"code at HEAD: **{len(met)} met, {len(missed)} MISSED**"
            + (f", {len(unmeasured)} not measured" if unmeasured else "")
        )
        by_target: dict[str, list[metrics.Judged]] = {}
        for j in missed:
            by_target.setdefault(j.target.key, []).append(j)
        if by_target:
            text += ". Missed: " + "; ".join(
                f"`{key}` ({'≥' if js[0].target.higher else '≤'} {js[0].target.threshold:g}×) "
                + (
                    f"in {js[0].column}: {js[0].measured.value:.2f}×"
                    if len(js) == 1
                    else f"in {len(js)} columns, {min(j.measured.value for j in js):.2f}× to "
                    f"{max(j.measured.value for j in js):.2f}×"
                )
                for key, js in by_target.items()
            )
        lines.append(text + " (see *Targets*).")
        if old:
            lines.append(_old_code_targets([j for j in ctx.judged if j.column in old]))
        split = [
            (key, column, runs)
            for (key, column), runs in ctx.by_run.items()
            if len({j.verdict for j in runs}) > 1
        ]
        if split:
            lines.append(
                "**Runs disagree**, each judged alone: "
                + "; ".join(
                    f"`{key}` in {column}: {metrics.runs_summary(runs)}"
                    for key, column, runs in split
                )
                + ". The verdicts under *Targets* are on the middle of the runs' values "
                "(met where more than half of the runs meet the target)."
            )
    elif ctx.judged:
        lines.append("Speed targets: no run of the code at HEAD.")
        lines.append(_old_code_targets(ctx.judged))
    else:
        lines.append("Speed targets: not measured (no benchmark results).")
    runs = ctx.material.inputs.accuracy_runs
    if any(not r.smoke for r in runs):
        targets = tables.target_table(runs)
        verdicts = targets["verdict"]
        limits = [tables.limit_met(r) for r in runs if not r.smoke]
        missed_names = list(targets.loc[verdicts.str.startswith("MISSED"), "target"])
        lines.append(
            f"Accuracy targets: **{int((verdicts == 'met').sum())} of {len(targets)} met**"
            + (f"; missed: {'; '.join(missed_names)}" if missed_names else "")
            + f". Assignment limits met by **{sum(limits)} of {len(limits)}** full runs."
        )
    return lines


def _fastest_lines(ctx: Context) -> list[str]:
    found = metrics.winners(ctx.frame)
    if found.empty:
        return []

    def listing(counts: pd.Series) -> str:
        return ", ".join(f"`{backend}` in {n}" for backend, n in counts.items())

    return [
        (
            f"Fastest backend over the {len(found)} (recipe layer, pass, column) measured: "
            f"{listing(found['fastest'].value_counts())}; fastest numpy backend: "
            f"{listing(found['numpy'].value_counts())} (table below)."
        )
    ]


def _crossover_lines(ctx: Context) -> list[str]:
    found = [
        c for c in tables.crossovers(ctx.frame) if c.pass_ == "forward" and c.against == "im2col"
    ]
    return [f"Kernel-size sweep, forward, {c.series} ({c.column}): {c.sentence()}." for c in found]


def _peak_lines(ctx: Context) -> list[str]:
    peaks = tables.sgemm_peaks(ctx.frame) if not ctx.frame.empty else {}
    if not peaks:
        return []
    return [
        "'% of SGEMM peak' is relative to the numpy float32 SGEMM measured in the same column: "
        + "; ".join(
            f"{column}: {tables.sig(peak.gflops)} GFLOP/s with {peak.blas}"
            for column, peak in peaks.items()
        )
        + ". It is a reference, not a ceiling: torch and the FFT run other kernels and can pass "
        "it."
    ]


def _narrow_blas_lines(ctx: Context) -> list[str]:
    """A warning naming the machines (all their thread counts) whose numpy GEMMs ran OpenBLAS
    kernels for narrower vector instructions than their CPU has (``provenance.narrow_blas``):
    an environment setting, or an OpenBLAS that does not know the CPU, and every numpy backend
    there runs below what the CPU allows (on a 2-core AMD EPYC with AVX-512, Haswell's kernels ran numpy's SGEMM at about
    half the rate of SkylakeX's)."""
    if ctx.frame.empty:
        return []
    found: dict[str, list[str]] = {}
    for run in ctx.material.inputs.benchmark_runs:
        text = provenance.narrow_blas(run.machine)
        if text is None:
            continue
        rows = ctx.frame[ctx.frame["run"] == run.run_id]
        for machine in rows.sort_values("column_order")["machine"].unique():
            if machine not in found.setdefault(text, []):
                found[text].append(machine)
    peaks = " (each column's SGEMM peak is given above)" if tables.sgemm_peaks(ctx.frame) else ""
    return [
        f"**BLAS kernels narrower than the CPU** in {'; '.join(machines)} (every thread count): "
        f"{text}. numpy's GEMMs, and every numpy backend built on them, ran below what that CPU "
        f"can do, while torch chose its kernels by what the CPU has{peaks}."
        for text, machines in found.items()
    ]


# --- targets --------------------------------------------------------------------------------


def _targets_section(ctx: Context) -> list[str]:
    out = [
        "## Targets",
        "",
        (
            "Every target of `nnbench.policy`, with the measured value and its verdict: met, "
            "MISSED, or not measured (the run lacks what the metric needs)."
        ),
        "",
        "### Speed targets",
        "",
    ]
    table = metrics.speed_target_table(ctx.judged, ctx.by_run)
    if table.empty:
        out += ["Not measured: no benchmark results.", ""]
    else:
        out += [
            (
                "One column per machine and thread count. Each metric is defined in "
                "`nnbench.policy.METRICS` and computed in `nnbench.report.metrics`. A column "
                "merges its runs, a later run's record of a benchmark replacing an earlier "
                "one's. Where several runs measured a target in a column, each is judged alone "
                "and the cell gives the middle of their values (the median; of an even count, "
                "the worse of the two middle ones), its verdict, how many runs met the target "
                "and the range of their values: a target is met where it holds in more than "
                "half of the runs. Where one run measured it, the merged column's value."
            ),
            "",
            tables.markdown(table),
            "",
        ]
        notes = {
            (j.column, j.target.metric, j.target.scope, j.measured.detail)
            for j in ctx.judged
            if math.isfinite(j.measured.value)
        }
        if notes:
            out += ["<details><summary>How each value was obtained</summary>", ""]
            out += [f"- {m}, {s} in {c}: {d}" for c, m, s, d in sorted(notes)]
            out += ["", "</details>", ""]
    twin = tables.twin_table(ctx.material.inputs.accuracy_runs)
    if not twin.empty:
        target = metrics.overhead_target()
        out += [
            f"Engine overhead in the accuracy runs (labelled by how each measured it; the same "
            f"target, ≤ {target.threshold:g}×): "
            + "; ".join(
                f"{r['dataset']} {r['kernel']} ({r['preset']}): {r['engine / torch']:.2f}×, "
                f"{r['measured as']} → {r[f'target ≤ {target.threshold:g}×']}"
                for _, r in twin.iterrows()
            )
            + ".",
            "",
        ]
    out += ["### Accuracy targets", ""]
    runs = ctx.material.inputs.accuracy_runs
    out += [
        (
            "Judged on full (non-smoke) runs; a target of the fastest kernel counts the quickest "
            "run of any kernel."
        ),
        "",
        tables.markdown(tables.target_table(runs), tables.TARGET_FORMATS),
        "",
    ]
    return out
