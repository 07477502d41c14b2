"""Assemble REPORT.md and its figures in memory, then put them in place file by file.

``render`` returns ``{file name: bytes}`` without touching the disk; ``publish`` writes each
file with an atomic rename (``nnbench._io``), figures first and REPORT.md last, so a reader
never sees a report that points at a figure not yet written, and an error anywhere before
``publish`` leaves the previous report untouched.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import kernels
from nnbench._io import atomic_write_bytes
from nnbench.report import plots, tables
from nnbench.report.load import (
    QUICK_NAME,
    QUICK_VERSION,
    VERIFICATION_NAME,
    AccuracyRun,
    BenchmarkRun,
    Inputs,
)

REPORT_NAME = "REPORT.md"

BENCH_COMMANDS = "`tox -e bench` (or `pytest --benchmark-only --benchmark-autosave`)"
REPORT_COMMAND = "`python -m nnbench.report`"
EXPECTED_SUITES = ("recipe", "kernel_size", "channels", "batch", "step")


@dataclass
class Material:
    """What a report is made from: the inputs found, plus what this invocation computed."""

    inputs: Inputs
    verification: dict | None = None  # a verification payload (see verify.Verification)
    quick_seconds: float | None = None  # how long the quick benchmark run took, if it ran
    no_run: bool = False
    machine: dict = field(default_factory=dict)  # machine_info() of the machine rendering
    now: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))


@dataclass
class Rendered:
    """Every output file of a report, in memory, and what the report says is missing."""

    files: dict[str, bytes]
    missing: list[str]


def render(material: Material) -> Rendered:
    """Every output file of the report (``{name: content}``), nothing written yet."""
    inputs = material.inputs
    files: dict[str, bytes] = {}
    missing: list[str] = []
    body: list[str] = []

    frame = tables.benchmark_frame(inputs.benchmark_runs)
    body += _benchmark_section(inputs, frame, files, missing, material)
    body += _verification_section(material, files, missing)
    body += _accuracy_section(inputs.accuracy_runs, files, missing)

    for run in inputs.benchmark_runs:
        if run.quick and run.path is None:  # computed just now: keep its records beside
            payload = {
                "machine_info": run.machine,
                "commit_info": run.commit,
                "datetime": run.datetime,
                "version": QUICK_VERSION,
                "benchmarks": run.records,
            }
            files[QUICK_NAME] = _json_bytes(payload)
    if material.verification is not None and not material.verification.get("loaded_from"):
        files[VERIFICATION_NAME] = _json_bytes(material.verification)

    head = _stamp(material) + _at_a_glance(frame, material) + _runs_used(material)
    if missing or inputs.notes:
        head += ["## What is missing", ""]
        head += [f"- {line}" for line in missing]
        head += [f"- Note: {line}" for line in inputs.notes]
        head.append("")
    text = "\n".join(head + body).rstrip() + "\n"
    files[REPORT_NAME] = text.encode("utf-8")
    return Rendered(files=files, missing=missing)


def publish(files: dict[str, bytes], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``files`` into ``out_dir``, each atomically, REPORT.md last."""
    out = Path(out_dir)
    order = sorted(files, key=lambda name: (name == REPORT_NAME, name))
    return [atomic_write_bytes(out / name, files[name]) for name in order]


def _json_bytes(payload: object) -> bytes:
    return (json.dumps(payload, indent=2, default=str) + "\n").encode("utf-8")


# --- stamp ----------------------------------------------------------------------------------


def _threads_text(machine: dict, short: bool = False) -> str:
    threads = machine.get("threads") or {}
    if not isinstance(threads, dict):
        return "—"
    parts = []
    for pool in threads.get("blas") or []:
        name = "BLAS" if short else f"BLAS {pool.get('library')} {pool.get('version') or ''}"
        parts.append(f"{name.rstrip()}: {pool.get('threads')}" + ("" if short else " threads"))
    if threads.get("torch_threads") is not None:
        parts.append(f"torch: {threads['torch_threads']}" + ("" if short else " threads"))
    return ", ".join(dict.fromkeys(parts)) or ("—" if short else "unknown")


def _versions_text(machine: dict) -> str:
    versions = machine.get("versions") or {}
    return ", ".join(f"{name} {version}" for name, version in versions.items()) or "unknown"


def _stamp(material: Material) -> list[str]:
    m = material.machine
    return [
        "# nnbench report",
        "",
        f"Generated {material.now.strftime('%Y-%m-%d %H:%M:%S UTC')} by {REPORT_COMMAND}"
        + (" with `--no-run`" if material.no_run else "")
        + ".",
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


def _settings_text(machine: dict) -> str:
    """The performance-relevant environment variables that are set, and any library that was
    loaded before ``kernels`` set its thread variables (it ran without them)."""
    environment = machine.get("environment") or {}
    text = ", ".join(f"`{name}={value}`" for name, value in environment.items() if value)
    missed = machine.get("thread_settings_missed_by") or []
    if missed:
        text += f" (loaded before these were set, so running without them: {', '.join(missed)})"
    return text or "none recorded"


def _short(commit: str) -> str:
    """A git hash shortened to 10 digits; anything else (say "unversioned") as it is."""
    is_hash = len(commit) >= 10 and all(ch in "0123456789abcdef" for ch in commit.lower())
    return commit[:10] if is_hash else commit


def _commit_text(commit: str | None, dirty: bool | None) -> str:
    return (_short(commit) + (" (dirty)" if dirty else "")) if commit else "—"


def _source_text(machine: dict) -> str:
    """The git revision an nnbench result recorded in its machine stamp ("—" if none)."""
    source = machine.get("source") or {}
    return _commit_text(source.get("commit"), source.get("dirty"))


def _runs_used(material: Material) -> list[str]:
    rows = []
    for run in material.inputs.benchmark_runs:
        machine = run.machine
        rows.append(
            {
                "kind": "benchmark (quick set)" if run.quick else "benchmark",
                "id": run.run_id,
                "date": run.datetime or "—",
                "CPU": machine.get("cpu_model", "—"),
                "cores": machine.get("cores", "—"),
                "threads": _threads_text(machine, short=True),
                "commit": _commit_text(run.commit.get("id"), run.commit.get("dirty")),
                "entries": len(run.records),
            }
        )
    for run in material.inputs.accuracy_runs:
        machine = run.data.get("machine") or {}
        rows.append(
            {
                "kind": f"accuracy {run.dataset}" + (" (smoke)" if run.smoke else ""),
                "id": run.run_id,
                "date": run.datetime or "—",
                "CPU": machine.get("cpu_model", "—"),
                "cores": machine.get("cores", "—"),
                "threads": _threads_text(machine, short=True),
                "commit": _source_text(machine),
                "entries": len(run.data["history"]),
            }
        )
    v = material.verification
    if v is not None:
        rows.append(
            {
                "kind": "verification",
                "id": v.get("loaded_from") or f"computed now ({VERIFICATION_NAME})",
                "date": v.get("date", "—"),
                "CPU": (v.get("machine") or {}).get("cpu_model", "—"),
                "cores": (v.get("machine") or {}).get("cores", "—"),
                "threads": _threads_text(v.get("machine") or {}, short=True),
                "commit": _source_text(v.get("machine") or {}),
                "entries": len(v.get("checks", [])),
            }
        )
    if not rows:
        return ["## Runs used", "", "None: no result files were found.", ""]
    frame = pd.DataFrame(rows).astype({"cores": str, "entries": str})
    return ["## Runs used", "", tables.markdown(frame), ""]


# --- summary --------------------------------------------------------------------------------


def _at_a_glance(frame: pd.DataFrame, material: Material) -> list[str]:
    """The headline numbers, each with the yardstick the issues set for it."""
    lines = []
    peak = tables.sgemm_peak(frame) if not frame.empty else None
    if peak is not None:
        lines.append(f"Measured SGEMM peak: **{tables.sig(peak)} GFLOP/s**.")
    means = tables.geometric_mean_speedups(frame) if not frame.empty else {}
    if means:
        lines.append(
            "Speed-up vs torch on the CIFAR-10 recipe's conv layers (geometric mean, forward + "
            "both gradients): "
            + ", ".join(f"`{b}` **{m:.2f}×**" for b, m in means.items() if b != "torch")
            + " (targets: `im2col` ≥ 0.8×, `loop` ≥ 0.5×)."
        )
    best = tables.best_fraction_of_peak(frame) if peak is not None else None
    if best is not None:
        lines.append(
            f"Best % of SGEMM peak on 3×3 layers with ≥ 32 input channels: `{best['backend']}` "
            f"**{best['pct_peak']:.0f}%** ({best['label']}, {best['pass']}; target ≥ 70%)."
        )
    crossings = tables.crossovers(frame) if not frame.empty else []
    forward = [c for c in crossings if c.pass_ == "forward" and c.has_im2col]
    if forward:
        lines.append(
            "FFT overtakes im2col (forward) at "
            + "; ".join(
                f"{c.series}: "
                + (
                    "no k"
                    if c.versus_im2col is None
                    else f"**k ≤ {c.versus_im2col}** (faster at every k measured)"
                    if c.versus_im2col == min(c.kernel_sizes)
                    else f"**k = {c.versus_im2col}**"
                )
                for c in forward
            )
            + "."
        )
    v = material.verification
    if v is not None:
        checks = v["checks"]
        bad = [
            f"{r['backend']} {r['pass']} {r['dtype']}"
            for r in checks
            if r["errors"] or (r["exact"] is False and r["exact_required"])
        ]
        worst32 = max((r["max_rel_error"] for r in checks if r["dtype"] == "float32"), default=0)
        worst64 = max((r["max_rel_error"] for r in checks if r["dtype"] == "float64"), default=0)
        exact = sorted({r["backend"] for r in checks if r["exact_required"]})
        if bad:
            lines.append(f"Verification: **problems** in {', '.join(bad)}.")
        else:
            lines.append(
                "Verification: every backend agrees with float64 torch (worst relative error "
                f"{worst32:.1e} in float32, {worst64:.1e} in float64); "
                f"{', '.join(exact) or 'no backend'} exact on integers, as required."
            )
    runs = material.inputs.accuracy_runs
    if any(not r.smoke for r in runs):
        kernels_ = sorted(
            set(kernels.available()) | {r.kernel for r in runs if r.dataset == "cifar10"}
        )
        targets = tables.target_table(runs, tables.project_targets(kernels_))
        met = int((targets["verdict"] == "met").sum())
        limits = [tables.limit_met(r) for r in runs if not r.smoke]
        lines.append(
            f"Accuracy: project targets met **{met} of {len(targets)}**; assignment limits met "
            f"by **{sum(limits)} of {len(limits)}** full runs."
        )
    if not lines:
        return []
    return ["## At a glance", "", *[f"- {line}" for line in lines], ""]


# --- benchmarks -----------------------------------------------------------------------------


def _benchmark_section(inputs, frame, files, missing, material) -> list[str]:
    out = ["## Benchmarks", ""]
    runs: list[BenchmarkRun] = inputs.benchmark_runs
    if frame.empty:
        how = (
            f"run {BENCH_COMMANDS}, then {REPORT_COMMAND}; or {REPORT_COMMAND} without "
            "`--no-run` for the quick embedded set (about two minutes)"
        )
        missing.append(
            f"No benchmark results (looked in {', '.join(inputs.searched) or '—'}): {how}."
        )
        return out + ["No benchmark results: see *What is missing* above.", ""]

    if any(r.quick for r in runs):
        took = f" in {material.quick_seconds:.0f} s" if material.quick_seconds is not None else ""
        missing.append(
            "The benchmark numbers come from the quick embedded set (`nnbench.bench.run_quick`"
            f"{took}), not the full suite: run {BENCH_COMMANDS} for every shape, then "
            f"{REPORT_COMMAND}."
        )
    present = set(frame["suite"])
    for suite in EXPECTED_SUITES:
        if suite not in present:
            missing.append(
                f"No {tables.SUITE_TITLES[suite].lower()} (suite `{suite}`) in the benchmark "
                f"run: run the full suite, {BENCH_COMMANDS}."
            )
    benchmarked = set(frame["backend"])
    for name in kernels.available():
        if name not in benchmarked:
            missing.append(
                f"Backend `{name}` is available here but has no benchmark results: re-run "
                f"{BENCH_COMMANDS}."
            )

    peak = tables.sgemm_peak(frame)
    sgemm = tables.sgemm_row(frame)
    rounds = sorted(set(frame.loc[frame["pass"] != "sgemm", "rounds"]))
    threads = sorted({str(t) for t in frame["threads"].dropna()})
    out += [
        (
            "Times are the **median** over each benchmark's rounds "
            f"({_span(rounds)} rounds). GFLOP/s = FLOPs of the call / median time, counting a "
            "direct convolution's 2·n·c·oh·ow·d·kh·kw multiply-adds for all three passes (so for "
            "`fft` it is the effective rate). Threads per benchmark: "
            f"{', '.join(threads) or 'not recorded'}."
        ),
        "",
    ]
    if peak is not None:
        out += [
            (
                f"**Measured SGEMM peak: {tables.sig(peak)} GFLOP/s** (numpy float32 matmul "
                f"{sgemm['input']} @ {sgemm['kernel']}, median {tables.sig(sgemm['median_s'] * 1e3)} ms "
                f"over {sgemm['rounds']} rounds); '% of SGEMM peak' is relative to it."
                + (
                    " Above 100% a call did its FLOPs faster than numpy's SGEMM does (a "
                    "better-tuned library such as torch's oneDNN, or the FFT's effective rate)."
                    if (frame["pct_peak"] > 100).any()
                    else ""
                )
                + (
                    " float64 rows are compared with the same float32 peak (float64 peaks at "
                    "about half of it)."
                    if (frame["dtype"] == "float64").any()
                    else ""
                )
            ),
            "",
        ]
    else:
        missing.append(
            f"No SGEMM calibration in the benchmark run, so no '% of peak': run {BENCH_COMMANDS}."
        )

    png = plots.throughput(frame, peak)
    if png is not None:
        files["throughput.png"] = png
    for suite in tables._ordered(frame["suite"], tables.SUITE_ORDER):
        if suite in ("sgemm", "calibration"):
            continue
        out += _suite_section(frame, suite, files, missing)

    speed = tables.pivot(frame, "vs_torch")
    if not speed.empty and "torch" in speed.columns:
        out += [
            "### Speed-up relative to torch",
            "",
            (
                "torch's median time / the backend's median time on the same case (> 1: faster "
                "than torch)."
            ),
            "",
            tables.markdown(
                speed, {c: tables.fixed(2, "×") for c in speed.columns if c in benchmarked}
            ),
            "",
        ]
        means = tables.geometric_mean_speedups(frame)
        if means:
            out += [
                "Geometric mean over the CIFAR-10 recipe's conv layers, forward and both "
                "gradients: "
                + ", ".join(f"`{b}` {m:.2f}×" for b, m in means.items())
                + " (targets: `im2col` ≥ 0.8×, `loop` ≥ 0.5×).",
                "",
            ]
    memory = tables.pivot(frame, "peak_memory_bytes")
    if not memory.empty:
        methods = sorted({m for m in frame["memory_method"] if m})
        data_columns = [c for c in memory.columns if c in set(frame["backend"])]
        memory[data_columns] = memory[data_columns] / 2**20
        out += [
            "### Peak memory per backend",
            "",
            (
                "Extra memory one call allocated at its peak, result included, in MiB "
                f"(method: {', '.join(methods) or 'not recorded'}; `rss-hwm` is the kernel's "
                "resident high-water mark, which sees numpy's and torch's allocations)."
            ),
            "",
            tables.markdown(memory, {c: tables.fixed(1) for c in data_columns}),
            "",
        ]
    out += [
        "### All measurements",
        "",
        "<details><summary>Every benchmark entry used (click to expand)</summary>",
        "",
        tables.markdown(tables.measurement_table(frame), tables.LAYER_FORMATS),
        "",
        "</details>",
        "",
    ]
    return out


def _span(values: list) -> str:
    values = [int(v) for v in values]
    if not values:
        return "?"
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def _suite_section(frame, suite, files, missing) -> list[str]:
    title = tables.SUITE_TITLES.get(suite, suite)
    out = [f"### {title}", ""]
    if suite == "recipe":
        if "throughput.png" in files:
            out += ["![Throughput per backend on the recipe's conv layers](throughput.png)", ""]
        out += [
            tables.markdown(tables.measurement_table(frame, suite), tables.LAYER_FORMATS),
            "",
        ]
        return out
    if suite == "kernel_size":
        found = tables.crossovers(frame)
        png = plots.kernel_sweep(frame, found)
        if png is not None:
            files["kernel_sweep.png"] = png
            out += ["![Median time vs kernel size per backend](kernel_sweep.png)", ""]
        out += _crossover_text(frame, found, missing)
        times = tables.pivot(frame, "median_s", suite)
        backends = [c for c in times.columns if c in set(frame["backend"])]
        times[backends] = times[backends] * 1e3
        out += ["Median time per call (ms):", "", tables.markdown(times), ""]
    if suite == "step":
        times = tables.pivot(frame, "median_s", suite)
        backends = [c for c in times.columns if c in set(frame["backend"])]
        times[backends] = times[backends] * 1e3
        out += ["Median time per training step (ms):", "", tables.markdown(times), ""]
        return out
    gflops = tables.pivot(frame, "gflops", suite)
    if not gflops.empty:
        out += ["GFLOP/s:", "", tables.markdown(gflops), ""]
    return out


def _from_k(k: int | None, sizes: tuple[int, ...], what: str) -> str:
    """'beats im2col from k = 7 on', '... at every k of the sweep', or '... at no k'."""
    if k is None:
        return f"{what.replace('beats', 'does not beat').replace('is the', 'is not the')} for good at any k"
    if k == min(sizes):
        return f"{what} at every k of the sweep (the crossover is at or below k = {k})"
    return f"{what} from **k = {k}** on"


def _crossover_text(frame, found, missing) -> list[str]:
    if "fft" not in set(frame["backend"]):
        missing.append(
            "No `fft` results in the kernel-size sweep, so no FFT crossover: run "
            f"{BENCH_COMMANDS} with the fft backend available."
        )
        return []
    lines = []
    for c in found:
        ks = f"k = {', '.join(map(str, c.kernel_sizes))}"
        if c.has_im2col:
            vs = "`fft` " + _from_k(c.versus_im2col, c.kernel_sizes, "beats `im2col`")
        else:
            vs = "no `im2col` results to compare `fft` with"
        everyone = "it " + _from_k(c.versus_all, c.kernel_sizes, "is the fastest backend")
        lines.append(f"- {c.series}, {c.pass_} ({c.dtype}, {ks}): {vs}; {everyone}.")
    if not lines:
        return []
    return [
        (
            "FFT crossover (the smallest k from which `fft` is faster at every larger k of the "
            "sweep):"
        ),
        "",
        *lines,
        "",
    ]


# --- verification ---------------------------------------------------------------------------


def _verification_section(material: Material, files, missing) -> list[str]:
    out = ["## Verification", ""]
    v = material.verification
    if v is None:
        missing.append(
            f"No verification: {REPORT_COMMAND} computes it (a few seconds) unless `--no-run` "
            f"is given and no earlier `{VERIFICATION_NAME}` is in the output folder."
        )
        return out + ["Not computed (`--no-run`): see *What is missing* above.", ""]
    rows = v["checks"]
    cases = v.get("cases", [])
    source = (
        f"read from `{v['loaded_from']}` (computed {v.get('date', '?')})"
        if v.get("loaded_from")
        else f"computed now in {v.get('seconds', 0):.1f} s"
    )
    out += [
        f"Every available backend against torch autograd in float64 on the same inputs, "
        f"{source}, over {len(cases)} shapes: "
        + ", ".join(
            f"`{c['id']}` k={c['kernel_shape'][2]}x{c['kernel_shape'][3]} p={c['padding']}"
            for c in cases
        )
        + ". Max relative error of a case = max|actual − reference| / max|reference|, the worst "
        "case shown. 'Exact on integers': with inputs in −4..4 every sum is exact, so "
        "`loop`, `im2col` and `torch` must equal the reference bit for bit; `fft` need not.",
        "",
    ]
    for name, reason in (v.get("unavailable") or {}).items():
        missing.append(f"Backend `{name}` is not available here, so it is not verified: {reason}")
    png = plots.verification_heatmap(rows)
    if png is not None:
        files["verification.png"] = png
        out += ["![Verification heat map](verification.png)", ""]
    frame = tables.verification_table(rows)
    out += [tables.markdown(frame, tables.verification_formats(frame)), ""]
    failed = [r for r in rows if r["errors"] or (r["exact"] is False and r["exact_required"])]
    if failed:
        out += [
            "**Problems**: "
            + "; ".join(f"{r['backend']} {r['pass']} {r['dtype']}" for r in failed),
            "",
        ]
    return out


# --- accuracy -------------------------------------------------------------------------------


def _accuracy_section(runs: list[AccuracyRun], files, missing) -> list[str]:
    out = ["## Accuracy", ""]
    run_all = "`tox -e accuracy` (or `python -m nnbench.accuracy --dataset all --kernel all`)"
    if not runs:
        missing.append(f"No accuracy results (reports/results/accuracy-*.json): run {run_all}.")
        return out + ["No accuracy results: see *What is missing* above.", ""]
    cifar_kernels = sorted(
        set(kernels.available()) | {r.kernel for r in runs if r.dataset == "cifar10"}
    )
    targets = tables.project_targets(cifar_kernels)
    out += [
        (
            "Test accuracy is measured after every epoch (the test set serves as the validation "
            "set); *time to X%* is the training wall-clock time at the end of the first epoch that "
            "reached X, as recorded by `nnbench.accuracy`. The assignment's limit is checked on the "
            "final test accuracy and train + evaluate time. Smoke runs (a small subset, for CI) "
            "are shown but count for nothing."
        ),
        "",
    ]
    for dataset in ("mnist", "cifar10"):
        title = tables.DATASET_TITLES[dataset]
        limit_acc, limit_s = tables.ASSIGNMENT_LIMITS[dataset]
        mine = [r for r in runs if r.dataset == dataset]
        out += [
            f"### {title}",
            "",
            f"Assignment limit: > {limit_acc:.0%} within {limit_s / 60:.0f} min.",
            "",
        ]
        if not mine:
            missing.append(
                f"No {title} accuracy results: run `python -m nnbench.accuracy --dataset "
                f"{dataset}" + (" --kernel all" if dataset == "cifar10" else "") + "`."
            )
            out += [f"No {title} results.", ""]
            continue
        full = [r for r in mine if not r.smoke]
        if not full:
            missing.append(
                f"Only smoke runs for {title}: a full run (`python -m nnbench.accuracy --dataset "
                f"{dataset}`) is needed to check the limit and the targets."
            )
        if dataset == "cifar10":
            have = {r.kernel for r in full}
            for kernel in cifar_kernels:
                if kernel not in have:
                    missing.append(
                        f"No full CIFAR-10 run with kernel `{kernel}`: run `python -m "
                        f"nnbench.accuracy --dataset cifar10 --kernel {kernel}`."
                    )
            if (
                full
                and not any(tables.time_to(r, 0.80) is not None for r in full)
                and not any(r.data.get("preset") == "best" for r in full)
            ):
                missing.append(
                    "No CIFAR-10 run reached 80%; the `best` preset is meant to: run `python -m "
                    "nnbench.accuracy --dataset cifar10 --kernel torch --preset best`."
                )
        png = plots.accuracy_curves(runs, dataset, targets)
        if png is not None:
            name = f"accuracy_{dataset}.png"
            files[name] = png
            out += [f"![{title} test accuracy vs wall-clock time]({name})", ""]
        out += [tables.markdown(tables.accuracy_table(runs, dataset), tables.ACCURACY_FORMATS), ""]

    out += [
        "### Targets",
        "",
        (
            "The project's targets on this 2-core machine (issue 4), judged on full runs; the "
            "fastest run counts."
        ),
        "",
        tables.markdown(tables.target_table(runs, targets), tables.TARGET_FORMATS),
        "",
    ]
    twin = tables.twin_table(runs)
    out += ["### Engine vs pure torch", ""]
    if twin.empty:
        missing.append(
            "No engine-vs-pure-torch comparison: run `python -m nnbench.accuracy --dataset "
            "cifar10 --kernel torch --compare-torch`."
        )
        out += ["No run trained the pure-torch twin.", ""]
    else:
        out += [
            (
                "The same network and steps trained by the engine (torch kernel) and directly in "
                f"torch, side by side in one run; target: engine ≤ {tables.TWIN_RATIO_TARGET}× "
                "torch's time."
            ),
            "",
            tables.markdown(twin, tables.TWIN_FORMATS),
            "",
        ]
    return out
