"""The report's figures, drawn with matplotlib's object API (no pyplot, no display needed).

Each function takes the data it draws and returns a ``Figure`` (or ``None`` when its data are
absent), so tests can read the axes; ``png`` turns one into bytes. Nothing is written here.

House rules, the same in every figure:

* each backend has one colour in every figure (``color``);
* limits, targets and reference lines share one neutral style (``REFERENCE``: grey, dashed) and
  always lie inside their axes;
* timings show their interquartile range (error bars or bands), and a median whose IQR is
  wider than ``tables.NOISY_IQR`` of it is drawn hatched or with an open marker;
* no text on the data: what would be an annotation is in the legend, outside the axes;
* log axes carry plain tick labels (1, 2, 4, 8, 16; 10 s, 1 min), and panels that compare the
  same quantity share their y axis.
"""

from __future__ import annotations

import io
import math
import zlib

import matplotlib

matplotlib.use("Agg")  # no screen on CI machines; must precede any backend use

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

from nnbench import policy
from nnbench.report import metrics, tables, verify
from nnbench.report.load import AccuracyRun

DPI = 130
#: One colour per backend (and per other named series) for the whole report.
COLORS = {
    "im2col": "#1f77b4",
    "fft": "#ff7f0e",
    "loop": "#2ca02c",
    "torch": "#d62728",
    "winograd": "#9467bd",
    "auto": "#8c564b",
    "none": "#17becf",  # the dense-only MNIST network
    "numpy": "#bcbd22",
    "pure torch": "#e377c2",  # the plain-torch twin of the engine's network
}
_SPARE = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")
#: Limits, targets and reference lines: one neutral style.
REFERENCE = {"color": "0.45", "linestyle": "--", "linewidth": 1.2}
NOISY_HATCH = "////"
#: The span between two measured sizes where a crossover lies.
SPAN_COLOR = "0.9"
PASS_TITLES = {
    "forward": "forward",
    "grad_inputs": "gradient w.r.t. inputs",
    "grad_kernels": "gradient w.r.t. kernels",
}


def color(name: str) -> str:
    """The colour of ``name`` in every figure (names not listed get a fixed spare colour)."""
    return COLORS.get(name) or _SPARE[zlib.crc32(name.encode()) % len(_SPARE)]


def png(fig: Figure | None) -> bytes | None:
    if fig is None:
        return None
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _plain(value: float, _pos=None) -> str:
    return f"{value:g}"


def _seconds(value: float, _pos=None) -> str:
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s"


def plain_log_axis(axis, base: int = 10, ticks=None, formatter=_plain) -> None:
    """Log-scale ``axis`` labelled with plain numbers: at ``ticks`` if given, else at 1, 2, 5
    times the powers of ``base``."""
    axis.set_major_locator(
        FixedLocator(list(ticks)) if ticks is not None else LogLocator(base, subs=(1.0, 2.0, 5.0))
    )
    axis.set_major_formatter(FuncFormatter(formatter))
    axis.set_minor_formatter(NullFormatter())


def _noise_handles() -> list:
    return [
        Patch(
            facecolor="white",
            edgecolor="0.3",
            hatch=NOISY_HATCH,
            label=f"hatched / open: IQR > {tables.NOISY_IQR:.0%} of the median",
        ),
        Line2D(
            [],
            [],
            color="0.3",
            marker="|",
            linestyle="none",
            markersize=10,
            label="whiskers / band: interquartile range",
        ),
    ]


def _floats(values) -> np.ndarray:
    return np.asarray(values, dtype=float)


def _curve(ax, x, y, low, high, noisy, colour: str) -> None:
    """A measured series: its interquartile band, the line through the medians, and a marker
    per point, open where the point is noisy."""
    x, y, low, high = (_floats(v) for v in (x, y, low, high))
    noisy = np.asarray(noisy, dtype=bool)
    ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)
    ax.plot(x, y, color=colour)
    ax.plot(x[~noisy], y[~noisy], "o", color=colour)
    ax.plot(x[noisy], y[noisy], "o", color=colour, markerfacecolor="white")


# --- throughput ---------------------------------------------------------------------------


def throughput_data(frame: pd.DataFrame) -> pd.DataFrame:
    """The recipe's conv records drawn as bars: GFLOP/s at the median and at the quartiles
    (a slower quartile is fewer GFLOP/s), per column, pass and backend; auto is left out (it
    runs one of the others)."""
    rows = frame[
        (frame["suite"] == "recipe")
        & frame["pass"].isin(tables.CONV_PASSES)
        & frame["gflops"].notna()
        & (frame["backend"] != "auto")
    ].copy()
    rows["gflops_low"] = rows["flops"] / rows["q3_s"] / 1e9
    rows["gflops_high"] = rows["flops"] / rows["q1_s"] / 1e9
    return rows


def throughput(frame: pd.DataFrame, peaks: dict[str, tables.Peak], failed=()) -> Figure | None:
    """Grouped bars of GFLOP/s per backend on the recipe's layers, IQR whiskers; one row of
    panels per machine and thread count (a subfigure whose title names its SGEMM reference),
    backends in ``failed`` named FAILED in the legend,
    one panel per pass, every panel on the same y scale. The column's SGEMM calibration is a
    reference line, not a ceiling: torch and FFT do not run numpy's SGEMM and may pass it."""
    rows = throughput_data(frame)
    if rows.empty:
        return None
    columns = tables.column_order(rows)
    passes = [p for p in tables.CONV_PASSES if p in set(rows["pass"])]
    backends = tables.backend_order(rows["backend"])
    labels = list(dict.fromkeys(rows["label"]))
    fig = Figure(
        figsize=(max(9.0, 1.1 * len(labels) * len(passes) + 3.5), 3.1 * len(columns) + 0.8),
        layout="constrained",
    )
    subfigs = np.atleast_1d(fig.subfigures(len(columns), 1))
    width = 0.8 / max(1, len(backends))
    top = 0.0
    all_axes = []
    for sub, column in zip(subfigs, columns):
        peak = peaks.get(column)
        axes = sub.subplots(1, len(passes), sharey=True, squeeze=False)[0]
        all_axes += list(axes)
        for ax, pass_ in zip(axes, passes):
            part = rows[(rows["column"] == column) & (rows["pass"] == pass_)]
            x = np.arange(len(labels))
            for i, backend in enumerate(backends):
                mine = part[part["backend"] == backend].set_index("label").reindex(labels)
                heights = mine["gflops"].to_numpy(dtype=float)
                if np.isnan(heights).all():  # not measured in this column's runs
                    continue
                errors = np.vstack(
                    [
                        np.clip(heights - mine["gflops_low"].to_numpy(dtype=float), 0, None),
                        np.clip(mine["gflops_high"].to_numpy(dtype=float) - heights, 0, None),
                    ]
                )
                bars = ax.bar(
                    x + (i - (len(backends) - 1) / 2) * width,
                    heights,
                    width,
                    yerr=np.nan_to_num(errors),
                    capsize=2,
                    color=color(backend),
                    error_kw={"elinewidth": 0.8, "ecolor": "0.2"},
                    label=backend,
                )
                for bar, noisy in zip(bars, mine["noisy"].fillna(False)):
                    if noisy:
                        bar.set_hatch(NOISY_HATCH)
                top = max(top, np.nanmax(np.append(mine["gflops_high"].to_numpy(float), 0)))
            if peak is not None:
                ax.axhline(peak.gflops, **REFERENCE)
                top = max(top, peak.gflops)
            ax.set_xticks(x, labels, fontsize=8)
            ax.set_title(PASS_TITLES.get(pass_, pass_), fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel("GFLOP/s")
        reference = (
            f"dashed: numpy SGEMM {tables.sig(peak.gflops)} GFLOP/s, {peak.blas}"
            if peak is not None
            else "no SGEMM calibration in this run"
        )
        sub.suptitle(f"{column} — {reference}", fontsize=9)
    for ax in all_axes:  # one scale for every panel: they compare the same quantity
        ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
    handles = [Patch(color=color(b), label=tables.backend_cell(b, failed)) for b in backends]
    if peaks:
        handles.append(
            Line2D(
                [],
                [],
                **REFERENCE,
                label="numpy SGEMM of that machine:\na reference, not a "
                "ceiling (torch\nand FFT run other kernels)",
            )
        )
    handles += _noise_handles()
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="backend")
    fig.suptitle("Throughput on the CIFAR-10 recipe's conv layers (direct-convolution FLOPs)")
    return fig


def figure_axes(fig: Figure) -> list:
    """Every axes of ``fig``, its subfigures' included."""
    return list(fig.axes) + [ax for sub in fig.subfigs for ax in figure_axes(sub)]


# --- kernel-size sweep --------------------------------------------------------------------


def kernel_sweep(
    frame: pd.DataFrame, crossovers: list[tables.Crossover], failed=()
) -> Figure | None:
    """Median time vs kernel size per backend (log y) with its IQR band; a row of panels per
    column and series of the sweep, a column per pass, all on one y axis. Where fft overtakes
    im2col, the span between the two measured sizes that bracket it is shaded: the crossover
    lies somewhere in it, not at a measured point."""
    rows = tables.sweep_rows(frame)
    rows = rows[rows["backend"] != "auto"]
    if rows.empty:
        return None
    panel_rows = list(dict.fromkeys(zip(rows["column"], rows["series"])))
    passes = list(dict.fromkeys(zip(rows["pass"], rows["dtype"])))
    fig = Figure(
        figsize=(max(7.0, 3.9 * len(passes) + 2.6), 3.2 * len(panel_rows) + 0.8),
        layout="constrained",
    )
    axes = fig.subplots(len(panel_rows), len(passes), sharey=True, squeeze=False)
    brackets = {
        (c.column, c.series, c.pass_, c.dtype): c for c in crossovers if c.against == "im2col"
    }
    backends = tables.backend_order(rows["backend"])
    shaded = False
    for r, (column, series) in enumerate(panel_rows):
        for c, (pass_, dtype) in enumerate(passes):
            ax = axes[r][c]
            part = rows[
                (rows["column"] == column)
                & (rows["series"] == series)
                & (rows["pass"] == pass_)
                & (rows["dtype"] == dtype)
            ]
            for backend in backends:
                line = part[part["backend"] == backend].sort_values("k")
                if line.empty:
                    continue
                _curve(
                    ax,
                    line["k"],
                    line["median_ms"],
                    line["q1_s"] * 1e3,
                    line["q3_s"] * 1e3,
                    line["noisy"],
                    color(backend),
                )
            bracket = brackets.get((column, series, pass_, dtype))
            if bracket is not None and bracket.at is not None and bracket.below is not None:
                ax.axvspan(bracket.below, bracket.at, color=SPAN_COLOR, zorder=0)
                shaded = True
            sizes = sorted(int(k) for k in set(part["k"]))
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
            ax.set_xticks(sizes)
            ax.set_xlim(min(sizes) - 1, max(sizes) + 1)
            ax.grid(alpha=0.3, which="both")
            partial = (
                f"\npartial sweep: only k = {', '.join(map(str, sizes))} measured"
                if len(sizes) < tables.FULL_SWEEP
                else ""
            )
            ax.set_title(f"{PASS_TITLES.get(pass_, pass_)}, {dtype}{partial}", fontsize=9)
            if r == len(panel_rows) - 1:
                ax.set_xlabel("kernel size k (k×k, 'same' padding)")
            if c == 0:
                ax.set_ylabel(f"{column}\n{series}\nmedian ms per call", fontsize=8)
    handles = [
        Line2D([], [], color=color(b), marker="o", label=tables.backend_cell(b, failed))
        for b in backends
    ]
    if shaded:
        handles.append(
            Patch(
                color=SPAN_COLOR, label="fft overtakes im2col somewhere\nbetween these measured k"
            )
        )
    handles += _noise_handles()
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="backend")
    fig.suptitle("Kernel-size sweep: median time per call (log scale)")
    return fig


# --- scaling ------------------------------------------------------------------------------


def scaling(frame: pd.DataFrame, machine: str, failed=()) -> Figure | None:
    """Speed-up over one thread vs threads per backend (log2 axes, plain ticks), one panel per
    recipe layer (geometric mean over its passes) on one y axis, the bare numpy GEMM of the
    layer's im2col shape as the reference line, IQR bands."""
    curves = metrics.scaling_curves(frame, machine)
    if curves.empty:
        return None
    layers = list(dict.fromkeys(curves["layer"]))
    ladder = sorted(set(curves["threads"]))
    fig = Figure(figsize=(3.6 * len(layers) + 2.8, 3.9), layout="constrained")
    axes = fig.subplots(1, len(layers), sharey=True, squeeze=False)[0]
    backends = [b for b in tables.backend_order(curves["backend"]) if b != "gemm"]
    for ax, layer in zip(axes, layers):
        part = curves[curves["layer"] == layer]
        gemm = part[part["backend"] == "gemm"].sort_values("threads")
        if not gemm.empty:
            ax.plot(_floats(gemm["threads"]), _floats(gemm["speedup"]), **REFERENCE)
        for backend in backends:
            line = part[part["backend"] == backend].sort_values("threads")
            if line.empty:
                continue
            _curve(
                ax,
                line["threads"],
                line["speedup"],
                line["low"],
                line["high"],
                line["noisy"],
                color(backend),
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        plain_log_axis(ax.xaxis, ticks=ladder)
        ax.set_xlim(ladder[0] / 1.15, ladder[-1] * 1.15)
        ax.set_title(layer, fontsize=10)
        ax.set_xlabel("threads")
        ax.grid(alpha=0.3, which="both")
    low = float(np.nanmin(curves[["low", "speedup"]].to_numpy()))
    high = float(np.nanmax(curves[["high", "speedup"]].to_numpy()))
    ticks = [2.0**e for e in range(math.floor(math.log2(low)), math.ceil(math.log2(high)) + 1)]
    plain_log_axis(axes[0].yaxis, ticks=ticks)
    axes[0].set_ylim(ticks[0] / 1.1, ticks[-1] * 1.1)
    axes[0].set_ylabel("speed-up over 1 thread\n(geometric mean of the layer's passes)")
    handles = [
        Line2D([], [], color=color(b), marker="o", label=tables.backend_cell(b, failed))
        for b in backends
    ]
    handles.append(
        Line2D(
            [], [], **REFERENCE, label="bare numpy GEMM of the layer's\nim2col shape (reference)"
        )
    )
    handles += _noise_handles()
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="backend")
    fig.suptitle(f"Scaling with threads: {machine}")
    return fig


# --- accuracy -----------------------------------------------------------------------------

_TARGET_MARKERS = ("*", "P", "X", "D", "p", "h")


def accuracy_curves(runs: list[AccuracyRun], dataset: str) -> Figure | None:
    """Test accuracy after each epoch vs training seconds (log x), one line per run; the
    assignment's limit as reference lines, the accuracy targets of ``nnbench.policy`` as grey
    markers at (seconds, accuracy) — a curve passing left of and above a marker meets it. The
    axes include every limit and target; the legend, outside them, names each."""
    runs = [r for r in runs if r.dataset == dataset and r.data["history"]]
    if not runs:
        return None
    fig = Figure(figsize=(10.0, 5.0), layout="constrained")
    ax = fig.subplots()
    presets = {r.data.get("preset") for r in runs}
    several_seeds = len({(r.kernel, r.data.get("preset"), r.smoke) for r in runs}) < len(runs)
    xs: list[float] = []
    ys: list[float] = []
    twin_labelled = False
    for run in runs:
        hx = [float(h["elapsed_seconds"]) for h in run.data["history"]]
        hy = [100.0 * float(h["valid_accuracy"]) for h in run.data["history"]]
        label = run.kernel if dataset != "mnist" else "dense-only network"
        if len(presets) > 1:
            label += f" ({run.data.get('preset')} net)"
        if several_seeds:
            label += f", seed {run.data.get('seed')}"
        if run.smoke:
            label += " (smoke subset)"
        style = ":" if run.smoke else ("-" if run.data.get("preset") != "best" else "-.")
        ax.plot(hx, hy, marker="o", color=color(run.kernel), label=label, linestyle=style)
        xs += hx
        ys += hy
        twin = run.data.get("torch_twin")
        if twin and twin.get("history"):
            tx = [float(h["elapsed_seconds"]) for h in twin["history"]]
            ty = [100.0 * float(h["valid_accuracy"]) for h in twin["history"]]
            ax.plot(
                tx,
                ty,
                marker="s",
                color=color("pure torch"),
                linestyle="--" if not run.smoke else ":",
                label="_nolegend_" if twin_labelled else "same net in plain torch",
            )
            twin_labelled = True
            xs += tx
            ys += ty
    limit = policy.LIMITS.get(dataset)
    if limit is not None:
        ax.axhline(100 * limit.accuracy, **REFERENCE)
        ax.axvline(limit.seconds, **REFERENCE, label=f"assignment limit: {limit.name}")
        xs.append(limit.seconds)
        ys.append(100 * limit.accuracy)
    for target, marker in zip(
        [t for t in policy.ACCURACY_TARGETS if t.dataset == dataset], _TARGET_MARKERS
    ):
        ax.plot(
            [target.seconds],
            [100 * target.accuracy],
            marker=marker,
            markersize=12,
            linestyle="none",
            color="0.55",
            markeredgecolor="0.15",
            zorder=5,
            label=f"target: {target.name}",
        )
        xs.append(target.seconds)
        ys.append(100 * target.accuracy)
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    plain_log_axis(ax.xaxis, formatter=_seconds)
    ax.set_ylim(max(0.0, min(ys) - 3), min(100.0, max(ys) + 2))
    ax.set_xlabel("training wall-clock time (log scale)")
    ax.set_ylabel("test accuracy after each epoch (%)")
    ax.grid(alpha=0.3, which="both")
    fig.legend(loc="outside right upper", fontsize=8)
    ax.set_title(f"{tables.DATASET_TITLES.get(dataset, dataset)}: test accuracy vs training time")
    return fig


# --- verification -------------------------------------------------------------------------


def verification_heatmap(payload: dict) -> Figure | None:
    """Backend x (pass, dtype): how close the worst case came to its bound (error / bound at
    the worst element, log10), PASS or FAIL written in each cell."""
    checks = payload.get("checks") or []
    if not checks:
        return None
    backends = list(dict.fromkeys(c["backend"] for c in checks))
    columns = list(dict.fromkeys((c["pass"], c["dtype"]) for c in checks))
    by_key = {(c["backend"], c["pass"], c["dtype"]): c for c in checks}
    floor, ceiling = -4.0, 2.0
    values = np.full((len(backends), len(columns)), np.nan)
    text = [["" for _ in columns] for _ in backends]
    for i, backend in enumerate(backends):
        for j, (pass_, dtype) in enumerate(columns):
            check = by_key.get((backend, pass_, dtype))
            if check is None or check["checked"] == 0:
                text[i][j] = "not run"
                continue
            margin = _worst_margin(check)
            values[i, j] = (
                floor if margin == 0 else float(np.clip(np.log10(margin), floor, ceiling))
            )
            status = "PASS" if check["passed"] else "FAIL"
            if not math.isfinite(margin):
                detail = "error"
            elif margin == 0:
                detail = "exact"
            else:
                detail = f"{margin:.0%} of bound" if margin < 10 else f"{margin:.2g}× bound"
            text[i][j] = f"{status}\n{detail}"
            other = verify.via(backend, check.get("route"))
            if other:
                text[i][j] += f"\n(via {other})"
    fig = Figure(
        figsize=(1.3 * len(columns) + 3.0, 0.6 * len(backends) + 2.0), layout="constrained"
    )
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap="viridis", vmin=floor, vmax=ceiling, aspect="auto"
    )
    for i in range(len(backends)):
        for j in range(len(columns)):
            failed = text[i][j].startswith("FAIL")
            ax.text(
                j,
                i,
                text[i][j],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if not failed and values[i, j] < -1 else "black",
                fontweight="bold" if failed else "normal",
            )
    ax.set_xticks(
        range(len(columns)),
        [f"{PASS_TITLES.get(p, p).replace('gradient', 'grad')}\n{d}" for p, d in columns],
        fontsize=8,
    )
    ax.set_yticks(range(len(backends)), backends)
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("log10 (worst error / its bound); > 0 fails")
    ax.set_title("Verification against the float64 torch reference")
    return fig


def _worst_margin(check: dict) -> float:
    records = list(check["failures"]) + ([check["closest"]] if check.get("closest") else [])
    worst = 0.0
    for record in records:
        error, bound = record.get("max_abs_error"), record.get("bound") or 0.0
        if error is None or record.get("problem"):
            return math.inf
        worst = max(worst, error / bound if bound > 0 else (math.inf if error > 0 else 0.0))
    return worst
