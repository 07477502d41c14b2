"""The body of the report: the benchmark, verification and accuracy sections.

Each section takes the ``Context`` a report is assembled in and returns its markdown lines; the
figures it draws go into ``Context.files``, what is missing into ``Context.missing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

import kernels
from nnbench import auto, policy
from nnbench.report import metrics, plots, tables, verify
from nnbench.report.load import VERIFICATION_NAME, AccuracyRun

if TYPE_CHECKING:
    from nnbench.report.render import Material

BENCH_COMMANDS = "`tox -e bench` (or `pytest --benchmark-only --benchmark-autosave`)"
REPORT_COMMAND = "`python -m nnbench.report`"
EXPECTED_SUITES = tables.SUITE_ORDER


@dataclass
class Context:
    """What the sections share while a report is assembled."""

    material: Material
    frame: pd.DataFrame
    failures: dict[str, list[str]]
    judged: list[metrics.Judged]
    #: each target judged on each run alone (``metrics.judge_runs``)
    by_run: dict[tuple, list[metrics.Judged]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return sorted(self.failures)

    def figure(self, name: str, fig, alt: str) -> list[str]:
        """Keep the figure's PNG as ``name``; the markdown line that shows it."""
        data = plots.png(fig)
        if data is None:
            return []
        self.files[name] = data
        return [f"![{alt}]({name})", ""]


# --- benchmarks -----------------------------------------------------------------------------


def benchmarks(ctx: Context) -> list[str]:
    out = ["## Benchmarks", ""]
    frame, inputs = ctx.frame, ctx.material.inputs
    if frame.empty:
        ctx.missing.append(
            f"No benchmark results (looked in {', '.join(inputs.searched) or '—'}): run "
            f"{BENCH_COMMANDS}, then {REPORT_COMMAND}; or {REPORT_COMMAND} without `--no-run` "
            "to time the quick set."
        )
        return out + ["No benchmark results: see *What is missing* above.", ""]
    for run in inputs.benchmark_runs:
        if run.quick:
            q = run.quick
            ctx.missing.append(
                f"The benchmark numbers come from the quick set (`pytest --benchmark-only -m "
                f"{q.get('marker')}`: {q.get('tests')} benchmarks in {q.get('seconds', 0):.0f} s, "
                f"{q.get('budget_seconds')} s of timed rounds each), not the full suite: run "
                f"{BENCH_COMMANDS} for every shape, then {REPORT_COMMAND}."
            )
    absent = [suite for suite in EXPECTED_SUITES if suite not in set(frame["suite"])]
    if absent:
        ctx.missing.append(
            "Not in the benchmark runs: "
            + ", ".join(f"{tables.SUITE_TITLES[s].lower()} (suite `{s}`)" for s in absent)
            + f": run the full suite, {BENCH_COMMANDS}."
        )
    benchmarked = set(frame["backend"])
    for name in kernels.available():
        if name not in benchmarked:
            ctx.missing.append(
                f"Backend `{name}` is available here but has no benchmark results: run "
                f"{BENCH_COMMANDS}."
            )
    rounds = sorted(set(frame.loc[frame["pass"] != "sgemm", "rounds"]))
    out += [
        (
            "Times are the **median** over each benchmark's rounds "
            f"({_span(rounds)} rounds), in ms. `~` marks a median whose interquartile range is "
            f"wider than {tables.NOISY_IQR:.0%} of it (noisy: compare with care); figures show the "
            "IQR as whiskers or bands. `· 0.42×` is the speed-up vs torch in the same column "
            "(torch's median / this one). GFLOP/s = FLOPs of the call / median time, counting a "
            "direct convolution's 2·n·c·oh·ow·d·kh·kw multiply-adds for all three passes (so for "
            "`fft` and `winograd` it is the effective rate). A backend marked FAILED failed a check "
            "(see *Verification*); `(via im2col)` marks a pass that backend computes with another "
            "algorithm (its `ROUTES`)."
        ),
        "",
    ]
    peaks = tables.sgemm_peaks(frame)
    if peaks:
        out += [
            (
                "The SGEMM calibration of each column, what its '% of SGEMM peak' is relative to (a "
                "reference, not a ceiling: torch and the FFT run other kernels and can pass it):"
            ),
            "",
            *[f"- {column}: {peak.text}." for column, peak in peaks.items()],
            "",
        ]
    else:
        ctx.missing.append(
            f"No SGEMM calibration in the benchmark runs, so no '% of peak': run {BENCH_COMMANDS}."
        )
    out += _recipe_section(ctx)
    out += _bound_section(ctx)
    out += _scaling_section(ctx)
    out += _overhead_section(ctx)
    out += _auto_section(ctx)
    out += _routes_section()
    out += _sweep_section(ctx)
    for suite in ("channels", "batch"):
        table = tables.side_by_side(frame, suite, ctx.failed)
        if not table.empty:
            out += [f"### {tables.SUITE_TITLES[suite]}", "", tables.markdown(table), ""]
    layer = tables.side_by_side(frame, "recipe", ctx.failed, passes=["layer"])
    if not layer.empty:
        out += [
            "### Conv2D layer, forward + backward",
            "",
            (
                "A whole `Conv2D` forward and backward (both gradients) per backend, on the recipe's "
                "layers."
            ),
            "",
            tables.markdown(layer),
            "",
        ]
    steps = tables.side_by_side(frame, "step", ctx.failed)
    if not steps.empty:
        out += [
            "### Training steps",
            "",
            "Median time per training step (ms):",
            "",
            tables.markdown(steps),
            "",
        ]
    memory = tables.pivot(frame, "peak_memory_bytes", "recipe", ctx.failed)
    if not memory.empty:
        methods = sorted({m for m in frame["memory_method"] if m})
        data = [c for c in memory.columns if c not in ("machine · threads", "case", "pass")]
        memory[data] = memory[data] / 2**20
        out += [
            "### Peak memory per backend (recipe layers)",
            "",
            (
                "Extra memory one call allocated at its peak, result included, in MiB "
                f"(method: {', '.join(methods) or 'not recorded'}; `rss-hwm` is the kernel's "
                "resident high-water mark, which sees numpy's and torch's allocations)."
            ),
            "",
            tables.markdown(memory, {c: tables.fixed(1) for c in data}),
            "",
        ]
    out += [
        "### All measurements",
        "",
        "<details><summary>Every benchmark entry used (click to expand)</summary>",
        "",
        tables.markdown(tables.measurement_table(frame, ctx.failed), tables.MEASUREMENT_FORMATS),
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


def _recipe_section(ctx: Context) -> list[str]:
    table = tables.side_by_side(ctx.frame, "recipe", ctx.failed, passes=tables.CONV_PASSES)
    if table.empty:
        return []
    out = [f"### {tables.SUITE_TITLES['recipe']}", ""]
    peaks = tables.sgemm_peaks(ctx.frame)
    out += ctx.figure(
        "throughput.png",
        plots.throughput(ctx.frame, peaks, ctx.failed),
        "Throughput per backend on the recipe's conv layers, one row per machine and thread count",
    )
    out += [
        "Median ms per call · speed-up vs torch, one column per machine and thread count:",
        "",
        tables.markdown(table),
        "",
    ]
    pct = ctx.frame[
        (ctx.frame["suite"] == "recipe")
        & ctx.frame["pass"].isin(tables.CONV_PASSES)
        & ctx.frame["pct_peak"].notna()
    ]
    if not pct.empty:
        share = tables.pivot(pct, "pct_peak", "recipe", ctx.failed)
        data = [c for c in share.columns if c not in ("machine · threads", "case", "pass")]
        out += [
            "% of the SGEMM peak of the same column (a reference, not a ceiling):",
            "",
            tables.markdown(share, {c: tables.fixed(0) for c in data}),
            "",
        ]
    return out


def _bound_section(ctx: Context) -> list[str]:
    table = metrics.bound_table(ctx.frame, ctx.failed)
    if table.empty:
        ctx.missing.append(
            "No GEMM bound in the benchmark runs (`gemm_bound_s`, recorded by the current suite): "
            f"run {BENCH_COMMANDS}."
        )
        return []
    return [
        "### Own GEMM bound and where the time goes",
        "",
        (
            "Each numpy backend's median against the same GEMMs replayed alone (same shapes, same "
            "threads, operands sharing memory where the call's did): `call / GEMMs` is its "
            "distance to its own bound, the call's median over the GEMMs' in rounds that "
            "interleave the two (`call beside its GEMMs`). Runs that did not record that median "
            "(`—`) used the benchmark's own median and an " + metrics.OLD_REPLAY + ". The shares "
            "split the profiled time of one call (summed over threads) into its stages."
        ),
        "",
        tables.markdown(table, metrics.BOUND_FORMATS),
        "",
    ]


def _scaling_section(ctx: Context) -> list[str]:
    frame = ctx.frame
    machines = list(dict.fromkeys(frame.loc[frame["suite"] == "scaling", "machine"]))
    if not machines:
        return []
    out = [
        "### Scaling with threads",
        "",
        (
            "The recipe layers timed at 1, 2, 4, ... threads up to the cores (`pytest "
            "--benchmark-only -k scaling`), beside a bare numpy GEMM of the layer's im2col shape at "
            "the same threads (`gemm`): *speed-up* is the median at the fewest threads / the median "
            "at the most, *ratio to GEMM* the backend's speed-up / the GEMM's. Newer runs also "
            "time the GEMM in each backend's own rounds (each round the GEMM, then the backend, "
            "so each follows the other); *GEMM timed* says whether the GEMM's speed-up on that "
            "row comes from there (*same rounds*: machine drift between the records of two "
            "thread counts cancels) or from the GEMM's own records. The plot's reference line "
            "is the GEMM's own records."
        ),
        "",
    ]
    for i, machine in enumerate(machines):
        name = "scaling.png" if i == 0 else f"scaling-{i + 1}.png"
        out += [f"#### {machine}", ""]
        out += ctx.figure(
            name, plots.scaling(frame, machine, ctx.failed), f"Speed-up vs threads, {machine}"
        )
        table = metrics.speedups(frame, machine)
        table["backend"] = [
            tables.backend_cell(b, ctx.failed, p) for b, p in zip(table["backend"], table["pass"])
        ]
        formats = {c: tables.sig for c in table.columns if c.endswith(" thr")}
        formats |= {
            "speed-up": tables.times,
            "GEMM speed-up": tables.times,
            "ratio to GEMM": tables.times,
        }
        out += ["Median ms at each thread count:", "", tables.markdown(table, formats), ""]
        out += _thread_steps(ctx, machine)
    return out


def _thread_steps(ctx: Context, machine: str) -> list[str]:
    """Whether a backend got slower with more threads, up the ladder and oversubscribed."""
    steps = metrics.thread_steps(ctx.frame, machine)
    if steps.empty:
        return []
    steps["backend"] = [tables.backend_cell(b, ctx.failed) for b in steps["backend"]]
    formats = {c: tables.times for c in steps.columns if c != "backend"}
    out = [
        (
            "Time after each step in threads / time before it, geometric mean over the layers "
            "and passes (below 1×: faster with more threads). *oversubscribed*: more threads "
            "asked for than there are cores (from the cores to the count asked for), timed in "
            "the same rounds as the same call at the cores; its ratio is the median over those "
            "rounds of the two calls' ratio (*ratio of: rounds*), or, for a record without its "
            "times round by round, the ratio of their medians. The engine's own threads stay "
            "within the cores (`kernels.threads.budget`); the BLAS and torch are set to the "
            "count asked for (*in force*: the counts they reported)."
        ),
        "",
        tables.markdown(steps, formats),
        "",
    ]
    over = metrics.oversubscription(ctx.frame, machine)
    if not over.empty:
        over["backend"] = [
            tables.backend_cell(b, ctx.failed, p) for b, p in zip(over["backend"], over["pass"])
        ]
        formats = {"ratio": tables.times}
        out += ["Oversubscribed, each layer and pass:", "", tables.markdown(over, formats), ""]
    return out


def _overhead_section(ctx: Context) -> list[str]:
    table = metrics.overhead_table(ctx.frame)
    if table.empty:
        return []
    return [
        "### Engine overhead",
        "",
        (
            "A CIFAR-10 training step with the torch kernel against the same network and batch in "
            "plain torch (`nnbench.torch_twin`), steps interleaved; the ratio of the medians."
        ),
        "",
        tables.markdown(
            table,
            {"engine / torch": tables.times, "engine IQR (% of median)": tables.fixed(0)},
        ),
        "",
    ]


def _auto_section(ctx: Context) -> list[str]:
    out = []
    for column in tables.column_order(ctx.frame):
        table = metrics.auto_choices(ctx.frame, column)
        if table.empty:
            continue
        if not out:
            out = [
                "### auto's choices",
                "",
                (
                    'What `backend="auto"` ran for each benchmarked case and pass, once warmed '
                    "up, its median, and the fastest single backend's median in the same run. "
                    "auto plans on a key's first call, by a race of its candidates; those within "
                    f"{auto.TRIAL_FACTOR:g}× of the race's choice then take turns on the key's "
                    "calls, and the one fastest in use is kept: *trial* says whether that kept "
                    "the race's choice or changed it (*from* the race's), and is — where there "
                    f"was no trial (one candidate within {auto.TRIAL_FACTOR:g}×, or runs from "
                    "before the trial). *timed* says how: *paired* where auto and that backend were timed "
                    "in the same rounds, in a new order each round (the medians of each, and the "
                    "median over the rounds of auto's time / the backend's in the same round), "
                    "*interleaved* where that backend was timed just before auto in each round "
                    "(older runs: the ratio of the medians), *separately* (its own benchmark) "
                    "where auto's rounds did not time it; *paired (candidates)* in a run of auto "
                    "alone, where the fastest is the fastest of the candidates auto's rounds "
                    "timed, with no checked record of their own. *control / choice* is the same "
                    "paired statistic for two identical calls: the backend auto ran, timed a "
                    "second time in the same rounds; one sample, per case and pass, of how far "
                    "the machine's noise alone moves the ratio at that many rounds."
                ),
                "",
            ]
        out += [
            f"{column}:",
            "",
            tables.markdown(
                table, {"auto / fastest": tables.times, "control / choice": tables.times}
            ),
            "",
        ]
    return out


def _routes_section() -> list[str]:
    lines = []
    for backend in kernels.available():
        for pass_ in tables.CONV_PASSES:
            route = verify.route(backend, pass_)
            if route is not None:
                other = verify.rerouted(backend, pass_)
                lines.append(
                    f"- `{backend}` {pass_}: {route}"
                    + (
                        f" — computed by `{other}`'s algorithm: its timings measure `{other}`'s code"
                        if other
                        else ""
                    )
                )
    if not lines:
        return []
    return [
        "### Routes",
        "",
        "Passes a backend computes another way (its module's `ROUTES`):",
        "",
        *lines,
        "",
    ]


def _sweep_section(ctx: Context) -> list[str]:
    frame = ctx.frame
    if tables.sweep_rows(frame).empty:
        return []
    out = [f"### {tables.SUITE_TITLES['kernel_size']}", ""]
    found = tables.crossovers(frame)
    out += ctx.figure(
        "kernel_sweep.png",
        plots.kernel_sweep(frame, found, ctx.failed),
        "Median time vs kernel size per backend",
    )
    if "fft" not in set(tables.sweep_rows(frame)["backend"]):
        ctx.missing.append(
            "No `fft` results in the kernel-size sweep, so no FFT crossover: run "
            f"{BENCH_COMMANDS} with the fft backend available."
        )
    if found:
        out += [
            (
                "Where `fft` overtakes, bracketed by the kernel sizes measured (the crossover lies "
                "between them, not at a measured point):"
            ),
            "",
            *[f"- {c.column}, {c.series}, {c.pass_} ({c.dtype}): {c.sentence()}." for c in found],
            "",
        ]
    out += [
        "Median time per call:",
        "",
        tables.markdown(tables.side_by_side(frame, "kernel_size", ctx.failed)),
        "",
    ]
    return out


# --- verification ---------------------------------------------------------------------------


def verification(ctx: Context) -> list[str]:
    out = ["## Verification", ""]
    v = ctx.material.verification
    if v is None:
        ctx.missing.append(
            f"No verification: {REPORT_COMMAND} computes it unless `--no-run` is given and no "
            f"earlier `{VERIFICATION_NAME}` is in the output folder."
        )
        return out + ["Not computed (`--no-run`): see *What is missing* above.", ""]
    cases = v.get("cases", [])
    source = (
        f"read from `{v['loaded_from']}` (computed {v.get('date', '?')})"
        if v.get("loaded_from")
        else f"computed now in {v.get('seconds', 0):.1f} s on {v.get('threads', '?')} thread(s)"
    )
    s = tables.verification_summary(v)
    out += [
        f"Every available backend × pass × dtype against torch autograd in float64 on the same "
        f"inputs, {source}, over the {len(cases)} shapes of `nnbench.verify.CHECK_CASES` (the "
        "unit tests' grid), each with normal and with small-integer operands (so a cell has "
        f"{2 * len(cases)} comparisons). A comparison "
        "passes when every element is within the backend's entry of the tolerance table "
        "(`nnbench.verify.TOLERANCES`: atol·√K·scale + rtol·|expected|); backends that promise "
        "exactness must equal the reference on integers. A cell passes when every case does. "
        f"Result: **{s['cells'] - s['failed_cells']} of {s['cells']} cells PASS**, "
        f"{s['comparisons'] - s['failed']} of {s['comparisons']} comparisons"
        + (
            f"; {s['declined']} (case, cell) pairs declined by the backend's `supports`"
            if s["declined"]
            else ""
        )
        + ".",
        "",
    ]
    for name, reason in (v.get("unavailable") or {}).items():
        ctx.missing.append(
            f"Backend `{name}` is not available here, so it is not verified: {reason}"
        )
    out += ctx.figure("verification.png", plots.verification_heatmap(v), "Verification matrix")
    out += [tables.markdown(tables.verification_table(v, ctx.failed)), ""]
    declined: dict[str, dict[str, None]] = {}
    for check in v["checks"]:
        for skip in check["skipped"]:
            declined.setdefault(check["backend"], {})[skip["case"]] = None
    reasons = {
        (check["backend"], skip["reason"]): None
        for check in v["checks"]
        for skip in check["skipped"]
    }
    if declined:
        out += ["Cases a backend declines (its `supports`), not counted:", ""]
        for backend, declined_cases in declined.items():
            why = "; ".join(reason for b, reason in reasons if b == backend)
            out.append(
                f"- `{backend}`: {len(declined_cases)} of {len(cases) * 2} (case, dtype): {why}"
            )
        out.append("")
    return out


# --- accuracy -------------------------------------------------------------------------------


def accuracy(ctx: Context) -> list[str]:
    runs: list[AccuracyRun] = ctx.material.inputs.accuracy_runs
    out = ["## Accuracy", ""]
    run_all = "`tox -e accuracy` (or `python -m nnbench.accuracy --dataset all --kernel all`)"
    if not runs:
        ctx.missing.append(f"No accuracy results (reports/results/accuracy-*.json): run {run_all}.")
        return out + ["No accuracy results: see *What is missing* above.", ""]
    cifar_kernels = sorted(
        set(kernels.available()) | {r.kernel for r in runs if r.dataset == "cifar10"}
    )
    out += [
        (
            "Test accuracy is measured after every epoch (the test set serves as the validation "
            "set); *time to X%* is the training wall-clock time at the end of the first epoch that "
            "reached X, as recorded by `nnbench.accuracy`. The assignment's limit is checked on the "
            "final test accuracy and train + evaluate time. Smoke runs (a small subset, for CI) are "
            "shown but count for nothing. The targets are in *Targets* above."
        ),
        "",
    ]
    for dataset in ("mnist", "cifar10"):
        title = tables.DATASET_TITLES[dataset]
        mine = [r for r in runs if r.dataset == dataset]
        out += [f"### {title}", "", f"Assignment limit: {policy.LIMITS[dataset].name}.", ""]
        if not mine:
            ctx.missing.append(
                f"No {title} accuracy results: run `python -m nnbench.accuracy --dataset "
                f"{dataset}" + (" --kernel all" if dataset == "cifar10" else "") + "`."
            )
            out += [f"No {title} results.", ""]
            continue
        full = [r for r in mine if not r.smoke]
        if not full:
            ctx.missing.append(
                f"Only smoke runs for {title}: a full run (`python -m nnbench.accuracy --dataset "
                f"{dataset}`) is needed to check the limit and the targets."
            )
        if dataset == "cifar10":
            have = {r.kernel for r in full}
            for kernel in cifar_kernels:
                if kernel not in have:
                    ctx.missing.append(
                        f"No full CIFAR-10 run with kernel `{kernel}`: run `python -m "
                        f"nnbench.accuracy --dataset cifar10 --kernel {kernel}`."
                    )
        out += ctx.figure(
            f"accuracy_{dataset}.png",
            plots.accuracy_curves(runs, dataset),
            f"{title} test accuracy vs wall-clock time",
        )
        out += [tables.markdown(tables.accuracy_table(runs, dataset), tables.ACCURACY_FORMATS), ""]
    twin = tables.twin_table(runs)
    out += ["### Engine vs plain torch (accuracy runs)", ""]
    if twin.empty:
        ctx.missing.append(
            "No engine-vs-plain-torch comparison in the accuracy runs: run `python -m "
            "nnbench.accuracy --dataset cifar10 --kernel torch --compare-torch`."
        )
        out += ["No run trained the plain-torch twin.", ""]
    else:
        out += [
            (
                "The same network trained by the engine (torch kernel) and directly in torch, in one "
                "run. *measured as* says what the ratio is: newer runs time interleaved training "
                "steps (medians), older ones compare one whole training of each."
            ),
            "",
            tables.markdown(twin, tables.TWIN_FORMATS),
            "",
        ]
    return out
