"""The report's figures, drawn with matplotlib's object API (no pyplot, no display needed).

Each function returns PNG bytes, or ``None`` when its data are absent; nothing is written
here, so a failure halfway leaves no half-made file behind.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # no screen on CI machines; must precede any backend use

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from nnbench.report import tables
from nnbench.report.load import AccuracyRun

DPI = 130
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
PASS_TITLES = {
    "forward": "forward",
    "grad_inputs": "gradient w.r.t. inputs",
    "grad_kernels": "gradient w.r.t. kernels",
    "layer": "Conv2D forward + backward",
    "step": "training step",
}


def backend_colors(names) -> dict[str, str]:
    """A fixed colour per backend, the same in every figure (sorted names -> palette)."""
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(sorted(set(names)))}


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _seconds(value: float, _pos=None) -> str:
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s"


def throughput(frame: pd.DataFrame, peak: float | None) -> bytes | None:
    """Grouped bars: GFLOP/s per backend for each conv case, one panel per pass, with the
    SGEMM peak as a dashed line. Uses the recipe suite if it ran, else every conv case."""
    rows = frame[frame["pass"].isin(tables.CONV_PASSES) & frame["gflops"].notna()]
    if "recipe" in set(rows["suite"]):
        rows = rows[rows["suite"] == "recipe"]
        title = "Throughput on the CIFAR-10 recipe's conv layers"
    else:
        title = "Throughput per backend and case"
    if rows.empty:
        return None
    passes = [p for p in tables.CONV_PASSES if p in set(rows["pass"])]
    backends = [b for b in tables.backend_order(frame) if b in set(rows["backend"])]
    colors = backend_colors(frame["backend"])
    labels_all = list(dict.fromkeys(rows["label"] + " " + rows["dtype"]))
    width_in = max(7.0, 2.0 + 0.45 * len(backends) * len(labels_all) * len(passes) / 1.5)
    fig = Figure(figsize=(min(width_in, 18.0), 4.6), layout="constrained")
    axes = fig.subplots(1, len(passes), sharey=True, squeeze=False)[0]
    bar = 0.8 / max(1, len(backends))
    top = peak or 0.0
    for ax, pass_ in zip(axes, passes):
        part = rows[rows["pass"] == pass_]
        labels = list(dict.fromkeys(part["label"] + " " + part["dtype"]))
        x = np.arange(len(labels))
        for i, backend in enumerate(backends):
            mine = part[part["backend"] == backend]
            values = {f"{r.label} {r.dtype}": r.gflops for r in mine.itertuples(index=False)}
            heights = [values.get(label, np.nan) for label in labels]
            ax.bar(
                x + (i - (len(backends) - 1) / 2) * bar,
                heights,
                bar,
                label=backend,
                color=colors[backend],
            )
            top = max(top, np.nanmax(heights) if np.isfinite(heights).any() else 0.0)
        if peak:
            ax.axhline(
                peak,
                color="black",
                linestyle="--",
                linewidth=1.2,
                label=f"SGEMM peak ({peak:.0f} GFLOP/s)",
            )
        ax.set_xticks(
            x, [label.replace(" float", "\nfloat") for label in labels], rotation=0, fontsize=8
        )
        ax.set_title(PASS_TITLES.get(pass_, pass_), fontsize=10)
        ax.set_xlabel("case (layer, dtype)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("throughput (GFLOP/s, direct-convolution FLOPs)")
    axes[0].set_ylim(0, top * 1.12 if top > 0 else 1)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", fontsize=9, title="backend")
    fig.suptitle(title)
    return _png(fig)


def kernel_sweep(frame: pd.DataFrame, crossovers: list[tables.Crossover]) -> bytes | None:
    """Median time vs kernel size per backend (log scale): a row of panels per series of the
    sweep (input shape, output channels), a column per pass; where ``fft`` overtakes
    ``im2col`` for good, a dotted vertical line."""
    rows = tables.sweep_rows(frame)
    if rows.empty:
        return None
    series = list(dict.fromkeys(rows["series"]))
    panels = list(dict.fromkeys(zip(rows["pass"], rows["dtype"])))
    colors = backend_colors(frame["backend"])
    fig = Figure(
        figsize=(max(6.5, 4.0 * len(panels) + 1.8), 3.4 * len(series) + 0.6),
        layout="constrained",
    )
    axes = fig.subplots(len(series), len(panels), squeeze=False)
    cross = {(c.series, c.pass_, c.dtype): c for c in crossovers}
    handles: dict[str, object] = {}
    for row, name in enumerate(series):
        for col, (pass_, dtype) in enumerate(panels):
            ax = axes[row][col]
            part = rows[
                (rows["series"] == name) & (rows["pass"] == pass_) & (rows["dtype"] == dtype)
            ]
            for backend in [b for b in tables.backend_order(frame) if b in set(part["backend"])]:
                line = part[part["backend"] == backend].sort_values("k")
                ax.plot(
                    line["k"],
                    line["median_s"] * 1e3,
                    marker="o",
                    label=backend,
                    color=colors[backend],
                )
            c = cross.get((name, pass_, dtype))
            if c is not None and c.versus_im2col is not None:
                ax.axvline(
                    c.versus_im2col,
                    color="grey",
                    linestyle=":",
                    linewidth=1.5,
                    label="fft faster than im2col from here on",
                )
                ax.annotate(
                    f"k = {c.versus_im2col}",
                    (c.versus_im2col, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -12),
                    textcoords="offset points",
                    fontsize=8,
                    color="grey",
                )
            ax.set_yscale("log")
            ax.set_xticks(sorted(int(k) for k in set(part["k"])))
            ax.grid(alpha=0.3, which="both")
            ax.set_title(f"{PASS_TITLES.get(pass_, pass_)}, {dtype}\n{name}", fontsize=9)
            if row == len(series) - 1:
                ax.set_xlabel("kernel size k (k×k, 'same' padding)")
            if col == 0:
                ax.set_ylabel("median time per call (ms, log)")
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=9)
    fig.suptitle("Kernel-size sweep (input n×d×h×w → output channels c)")
    return _png(fig)


def accuracy_curves(
    runs: list[AccuracyRun], dataset: str, targets: list[tables.Target]
) -> bytes | None:
    """Test accuracy after each epoch vs training wall-clock seconds (log scale), one line per
    run; the assignment's limit as red dashed lines, each distinct project target as a star at
    (seconds, accuracy): a curve passing left of and above a star meets that target."""
    runs = [r for r in runs if r.dataset == dataset and r.data["history"]]
    if not runs:
        return None
    colors = backend_colors(r.kernel for r in runs)
    fig = Figure(figsize=(8.5, 5.2), layout="constrained")
    ax = fig.subplots()
    presets = {r.data.get("preset") for r in runs}
    several_seeds = len({(r.kernel, r.data.get("preset"), r.smoke) for r in runs}) < len(runs)
    xs_all: list[float] = []
    ys_all: list[float] = []
    twin_labelled = False
    for run in runs:
        xs = [float(h["elapsed_seconds"]) for h in run.data["history"]]
        ys = [100.0 * float(h["valid_accuracy"]) for h in run.data["history"]]
        label = run.kernel if dataset != "mnist" else "dense-only network"
        if len(presets) > 1:
            label += f" ({run.data.get('preset')} net)"
        if several_seeds:
            label += f", seed {run.data.get('seed')}"
        if run.smoke:
            label += " (smoke subset)"
        style = ":" if run.smoke else ("-" if run.data.get("preset") != "best" else "-.")
        ax.plot(xs, ys, marker="o", color=colors[run.kernel], label=label, linestyle=style)
        xs_all += xs
        ys_all += ys
        twin = run.data.get("torch_twin")
        if twin and twin.get("history"):
            tx = [float(h["elapsed_seconds"]) for h in twin["history"]]
            ty = [100.0 * float(h["valid_accuracy"]) for h in twin["history"]]
            ax.plot(
                tx,
                ty,
                marker="s",
                color="black",
                linestyle="--" if not run.smoke else ":",
                label="_nolegend_" if twin_labelled else "same net in pure torch",
            )
            twin_labelled = True
            xs_all += tx
            ys_all += ty
    limit_acc, limit_s = tables.ASSIGNMENT_LIMITS.get(dataset, (None, None))
    if limit_acc is not None:
        ax.axhline(100 * limit_acc, color="red", linestyle="--", linewidth=1)
        ax.axvline(
            limit_s,
            color="red",
            linestyle="--",
            linewidth=1,
            label=f"assignment limit: > {limit_acc:.0%} within {_seconds(limit_s)}",
        )
        xs_all.append(limit_s)
    shown: set[tuple[float, float]] = set()
    per_accuracy: dict[float, int] = {}
    star_labelled = False
    for target in targets:
        key = (target.accuracy, target.seconds)
        if target.dataset != dataset or key in shown or key == (limit_acc, limit_s):
            continue
        shown.add(key)
        ax.plot(
            [target.seconds],
            [100 * target.accuracy],
            marker="*",
            markersize=15,
            linestyle="none",
            color="gold",
            markeredgecolor="black",
            zorder=5,
            label="_nolegend_" if star_labelled else "project target",
        )
        star_labelled = True
        scope = "fastest kernel" if target.kernels is None else ", ".join(target.kernels)
        if dataset == "mnist":
            scope = "dense-only"
        nth = per_accuracy.get(target.accuracy, 0)  # stars on one level: labels above, below
        per_accuracy[target.accuracy] = nth + 1
        ax.annotate(
            f"≥ {target.accuracy:.0%} by {_seconds(target.seconds)} ({scope})",
            (target.seconds, 100 * target.accuracy),
            textcoords="offset points",
            xytext=(-6, 9) if nth % 2 == 0 else (-6, -16),
            fontsize=8,
            ha="right" if nth % 2 == 0 else "left",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
        )
        xs_all.append(target.seconds)
        ys_all.append(100 * target.accuracy)
    ax.set_xscale("log")
    ax.set_xlim(min(xs_all) / 1.6, max(xs_all) * 1.8)
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(FuncFormatter(_seconds))
    ax.set_ylim(max(0.0, min(ys_all) - 5), 100)
    ax.set_xlabel("training wall-clock time (seconds, log scale)")
    ax.set_ylabel("test accuracy after each epoch (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{tables.DATASET_TITLES.get(dataset, dataset)}: test accuracy vs training time")
    return _png(fig)


def _luminance(rgba) -> float:
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def verification_heatmap(rows: list[dict]) -> bytes | None:
    """log10 of the max relative error, backend x (pass, dtype); exact zeros shown as such."""
    if not rows:
        return None
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    columns = list(dict.fromkeys((r["pass"], r["dtype"]) for r in rows))
    by_key = {(r["backend"], r["pass"], r["dtype"]): r for r in rows}
    floor = -17.0  # below float64's epsilon (2.2e-16): where exact zeros are drawn
    values = np.full((len(backends), len(columns)), np.nan)
    text = [["" for _ in columns] for _ in backends]
    for i, backend in enumerate(backends):
        for j, (pass_, dtype) in enumerate(columns):
            r = by_key.get((backend, pass_, dtype))
            if r is None or r["cases"] == 0:
                text[i][j] = "not run" if not (r and r["errors"]) else "error"
                continue
            err = r["max_rel_error"]
            values[i, j] = (
                floor if err == 0 else max(floor, math.log10(err)) if math.isfinite(err) else 0.0
            )
            text[i][j] = "0 (exact)" if err == 0 else f"{err:.1e}"
            if r["errors"]:
                text[i][j] += "\n+errors"
    fig = Figure(
        figsize=(1.15 * len(columns) + 2.6, 0.55 * len(backends) + 2.0), layout="constrained"
    )
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap="viridis", vmin=floor, vmax=0, aspect="auto"
    )
    for i in range(len(backends)):
        for j in range(len(columns)):
            v = values[i, j]
            ax.text(
                j,
                i,
                text[i][j],
                ha="center",
                va="center",
                fontsize=8,
                color="black" if np.isnan(v) or _luminance(image.to_rgba(v)) > 0.5 else "white",
            )
    ax.set_xticks(
        range(len(columns)),
        [f"{PASS_TITLES.get(p, p).replace('gradient', 'grad')}\n{d}" for p, d in columns],
        fontsize=8,
    )
    ax.set_yticks(range(len(backends)), backends)
    ax.set_xlabel("pass and dtype")
    ax.set_ylabel("backend")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("log10 max relative error (−17: exact)")
    ax.set_title("Verification against the float64 torch reference")
    return _png(fig)
