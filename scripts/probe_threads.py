"""Where the numpy side stops scaling on this machine: a probe for machines with many cores.

    python scripts/probe_threads.py [--out probe.json] [--threads 1,2,4,16] [--calls 7]
                                    [--chunk-mb 0.5,1,2,4,8] [--thread-costs 16384,65536]

Three measurements, each a table on stdout and a record in ``--out`` (JSON, written atomically):

0. ``pool``: what one more slice costs, the quantity ``kernels.threads.THREAD_COST_ELEMENTS``
   stands for. At each thread count: the round trip of a ``threads.run`` call whose slices do
   nothing (median of ``POOL_CALLS`` calls), one thread's copy time per float32 element for a
   1 MB and a 16 MB array (median of ``--calls`` copies), the round trip in elements of those
   copies, and how much faster ``threads.copy`` is than one thread's copy at those sizes.
1. ``settings``: im2col, loop, fft and winograd on the CIFAR-10 recipe's layers (forward and
   both gradients; winograd's own passes only, not the weight gradient it leaves to im2col,
   its ``ROUTES``) at the most threads asked for, with each backend's ``CHUNK_BYTES`` and
   ``kernels.threads.THREAD_COST_ELEMENTS`` (how finely a call is cut into slices) set to
   each pair of ``--chunk-mb`` and ``--thread-costs`` (by default a small grid around the
   shipped values). Median ms of ``--calls`` calls after one untimed call per setting (a new
   chunk shape reallocates the scratch buffers): ``bench.median_seconds``, the suite's protocol.
2. ``step``: one training step of the CIFAR-10 fast recipe with the torch kernel, at each
   thread count, split into every layer's forward, backward and update, beside the plain-torch
   twin's step: which layers of the engine stop scaling. Median ms of ``--calls`` steps of each,
   interleaved in a random order per round (``bench.interleaved``).

It changes module constants for the duration of a measurement and puts them back; it is a
probe for tuning those constants, not a benchmark of record (the suite's scaling group is).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernels
from kernels import backend_fft, backend_im2col, backend_loop, backend_winograd, threads
from nnbench import bench, machine, runtime
from nnbench._io import atomic_write_json, unwritable_reason
from nnbench.bench.cases import recipe_cases, thread_ladder

CHUNK_MB = (0.5, 1, 2, 4, 8)
#: Calls of an empty ``threads.run`` per median: each is tens of microseconds.
POOL_CALLS = 200
#: The copies of the pool probe: float32 elements, one array in cache, one well beyond it.
COPY_SIZES = {"1MB": 1 << 18, "16MB": 1 << 22}
THREAD_COSTS = (1 << 14, 1 << 16, 1 << 18, 1 << 20)
BACKENDS = {
    "im2col": backend_im2col,
    "loop": backend_loop,
    "fft": backend_fft,
    "winograd": backend_winograd,
}
PASSES = ("forward", "grad_inputs", "grad_kernels")


def probe_settings(
    threads_count: int, calls: int, chunk_mb=CHUNK_MB, thread_costs=THREAD_COSTS
) -> list[dict]:
    rows = []
    with machine.pinned_threads(threads_count):
        for case in recipe_cases("fast"):
            for name, module in BACKENDS.items():
                for pass_ in _own_passes(name, module):
                    call = bench.make_call(name, case, pass_)
                    for mb, cost in itertools.product(chunk_mb, thread_costs):
                        shipped = module.CHUNK_BYTES, threads.THREAD_COST_ELEMENTS
                        module.CHUNK_BYTES = int(mb * 2**20)
                        threads.THREAD_COST_ELEMENTS = cost
                        try:
                            ms = bench.median_seconds(call.fn, calls) * 1e3
                        finally:
                            module.CHUNK_BYTES, threads.THREAD_COST_ELEMENTS = shipped
                        rows.append(
                            {
                                "layer": case.label,
                                "backend": name,
                                "pass": pass_,
                                "chunk_mb": mb,
                                "thread_cost_elements": cost,
                                "shipped": (int(mb * 2**20), cost) == shipped,
                                "threads": threads_count,
                                "median_ms": ms,
                            }
                        )
    return rows


def _own_passes(name: str, module) -> tuple[str, ...]:
    """The passes ``module`` computes itself (its ``ROUTES`` name it), not by another backend."""
    routes = getattr(module, "ROUTES", {})
    return tuple(p for p in PASSES if routes.get(p, name).startswith(name))


def probe_pool(ladder: list[int], calls: int) -> list[dict]:
    rows = []
    arrays = {
        label: (np.ones((128, size // 128), np.float32), np.empty((128, size // 128), np.float32))
        for label, size in COPY_SIZES.items()
    }
    for count in ladder:
        with machine.pinned_threads(count):
            items = list(range(threads.budget()))
            round_trip = bench.median_seconds(
                functools.partial(threads.run, _nothing, items), POOL_CALLS
            )
            one, split, per_element = {}, {}, {}  # seconds: one thread's copy, threads.copy
            for label, (source, out) in arrays.items():
                one[label] = bench.median_seconds(lambda s=source, o=out: np.copyto(o, s), calls)
                split[label] = bench.median_seconds(
                    lambda s=source, o=out: threads.copy(o, s), calls
                )
                per_element[label] = one[label] / COPY_SIZES[label]
            rows.append(
                {
                    "threads": count,
                    "slices": len(items),
                    "round_trip_us": round_trip * 1e6,
                    "copy_ns_per_element": {k: v * 1e9 for k, v in per_element.items()},
                    "round_trip_elements": {
                        k: round(round_trip / v) for k, v in per_element.items()
                    },
                    "split_copy_speedup": {label: one[label] / split[label] for label in one},
                    "thread_cost_elements": threads.THREAD_COST_ELEMENTS,
                }
            )
    return rows


def _nothing(_item) -> None:
    return None


def probe_step(ladder: list[int], calls: int) -> list[dict]:
    rows = []
    for count in ladder:
        with machine.pinned_threads(count):
            engine = bench.train_step_call("cifar10-fast", "torch")
            twin = bench.twin_step_call("cifar10-fast")
            model = _model_of(engine)
            seconds = defaultdict(list)
            _time_layers(model, seconds)
            engine.fn()
            twin.fn()
            seconds.clear()  # the layers' times of the timed steps only
            steps, twin_steps = bench.interleaved(engine.fn, twin.fn, rounds=calls, warm_up=False)
            row = {
                "threads": count,
                "engine_ms": statistics.median(steps) * 1e3,
                "twin_ms": statistics.median(twin_steps) * 1e3,
                "layers_ms": {
                    key: sum(values) / calls * 1e3 for key, values in sorted(seconds.items())
                },
            }
            rows.append(row)
    return rows


def _model_of(call) -> object:
    """The model a ``train_step_call`` steps (its closure holds it)."""
    for cell in getattr(call.fn, "__closure__", None) or ():
        if hasattr(cell.cell_contents, "layers"):
            return cell.cell_contents
    raise RuntimeError("no model in the step call's closure")


def _time_layers(model, seconds: dict) -> None:
    """Wrap each layer's forward, backward and update (on the instance) to add up their time.

    A layer's backward may call its own parameter gradient (Conv2D, Dense): only the outermost
    timed call of a layer counts, so no time is counted twice.
    """
    for index, layer in enumerate(model.layers):
        busy = [False]  # this layer is inside a timed call
        for method in ("_forward", "backward_impl", "backward_parameters_impl",
                       "update_parameters"):  # fmt: skip
            original = getattr(layer, method)
            key = f"{index:02d} {type(layer).__name__} {method.strip('_').split('_')[0]}"

            def timed(*args, _original=original, _key=key, _busy=busy, **kwargs):
                if _busy[0]:
                    return _original(*args, **kwargs)
                _busy[0] = True
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    seconds[_key].append(time.perf_counter() - start)
                    _busy[0] = False

            setattr(layer, method, timed)


def _numbers(text: str, name: str, kind, parser) -> list:
    """A comma-separated list of positive numbers, or a parser error naming ``name``."""
    try:
        values = [kind(value) for value in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(value) and value > 0 for value in values):
        parser.error(f"{name} must be comma-separated positive numbers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the records")
    parser.add_argument(
        "--threads",
        default=None,
        help="thread counts, comma-separated (default: 1, 2, 4, ... cores)",
    )
    parser.add_argument("--calls", type=int, default=7, help="timed calls per median")
    parser.add_argument("--chunk-mb", default=",".join(f"{v:g}" for v in CHUNK_MB))
    parser.add_argument("--thread-costs", default=",".join(str(v) for v in THREAD_COSTS))
    parser.add_argument("--skip", choices=["pool", "settings", "step"], default=None)
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error(f"--calls must be at least 1, got {args.calls}")
    cores = threads.CORES
    ladder = (
        thread_ladder(cores)
        if args.threads is None
        else _numbers(args.threads, "--threads", int, parser)
    )
    chunk_mb = _numbers(args.chunk_mb, "--chunk-mb", float, parser)
    thread_costs = _numbers(args.thread_costs, "--thread-costs", int, parser)
    if "torch" not in kernels.available() and args.skip != "step":
        parser.error("the step probe needs the torch kernel; pass --skip step")
    if args.out is not None:
        reason = unwritable_reason(args.out.resolve().parent)
        if reason:
            parser.error(f"--out {args.out}: {reason}")

    runtime.configure()  # as the benchmark suite does, before anything is timed
    record = {"machine": machine.machine_info(), "cores": cores, "calls": args.calls}
    if args.skip != "pool":
        record["pool"] = probe_pool(ladder, args.calls)
        _print_pool(record["pool"])
        _save(args.out, record)
    if args.skip != "settings":
        rows = probe_settings(max(ladder), args.calls, chunk_mb, thread_costs)
        record["settings"] = rows
        _print_settings(rows, len(chunk_mb) * len(thread_costs))
        _save(args.out, record)  # each part as soon as it is measured
    if args.skip != "step":
        record["step"] = probe_step(ladder, args.calls)
        _print_step(record["step"])
        _save(args.out, record)
    return 0


def _save(path: Path | None, record: dict) -> None:
    if path is not None:
        atomic_write_json(path, record)


def _print_pool(rows: list[dict]) -> None:
    print("\nthe pool: an empty threads.run's round trip, in microseconds and in elements of one")
    print(f"thread's float32 copy (THREAD_COST_ELEMENTS = {threads.THREAD_COST_ELEMENTS}), and")
    print("threads.copy's speed-up over one thread's copy")
    print(f"{'threads':>8}{'slices':>8}{'us':>9}" + "".join(
        f"{'elements ' + label:>18}{'speed-up ' + label:>18}" for label in COPY_SIZES))  # fmt: skip
    for row in rows:
        cells = "".join(
            f"{row['round_trip_elements'][label]:>18d}{row['split_copy_speedup'][label]:>18.2f}"
            for label in COPY_SIZES
        )
        print(f"{row['threads']:>8d}{row['slices']:>8d}{row['round_trip_us']:>9.1f}{cells}")


def _print_settings(rows: list[dict], per_row: int) -> None:
    print(
        f"\nmedian ms at {rows[0]['threads']} threads, by CHUNK_BYTES (MB) / THREAD_COST_ELEMENTS"
    )
    print("(* the shipped values)")
    header = "".join(f"{r['chunk_mb']:>6g}/{r['thread_cost_elements']:<8d}" for r in rows[:per_row])
    print(f"{'layer':<11}{'backend':<8}{'pass':<13}{header}")
    for key, group in itertools.groupby(rows, lambda r: (r["layer"], r["backend"], r["pass"])):
        cells = "".join(
            f"{row['median_ms']:>13.2f}{'*' if row['shipped'] else ' '} " for row in group
        )
        print(f"{key[0]:<11}{key[1]:<8}{key[2]:<13}{cells}")


def _print_step(rows: list[dict]) -> None:
    print("\nCIFAR-10 fast training step, torch kernel: median ms (layers: mean ms per step)")
    keys = list(rows[0]["layers_ms"])
    print(f"{'':<40}" + "".join(f"{row['threads']:>9d}t" for row in rows))
    for label in ("engine_ms", "twin_ms"):
        print(f"{label:<40}" + "".join(f"{row[label]:>10.2f}" for row in rows))
    for key in keys:
        print(f"{key:<40}" + "".join(f"{row['layers_ms'].get(key, 0.0):>10.2f}" for row in rows))


if __name__ == "__main__":
    raise SystemExit(main())
