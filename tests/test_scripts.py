"""The developer scripts in scripts/: the run set's argument checks and the probes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels import backend_im2col, threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["amd2", "everything"], "mode must be full, benchmarks or cores, got 'everything'"),
        (["amd 2"], "PREFIX may hold letters, digits"),
        (["-k"], "PREFIX may hold letters, digits"),
        ([".."], "PREFIX may hold letters, digits"),
        ([], "usage: scripts/run_set.sh PREFIX"),
    ],
    ids=["mode", "space-in-prefix", "option-as-prefix", "dot-prefix", "no-prefix"],
)
def test_run_set_refuses_bad_arguments_before_any_run(tmp_path, args, message):
    env = {**os.environ, "RUNS_DIR": str(tmp_path / "runs")}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "run_set.sh"), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def _stub(folder: Path, name: str, log: Path) -> None:
    """An executable ``name`` in ``folder`` that appends its arguments, one call a line."""
    path = folder / name
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> "{log}"\n')
    path.chmod(0o755)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("mode", "benchmark_runs", "accuracy_runs"),
    [("cores", 2, 0), ("benchmarks", 9, 0), ("full", 9, 4)],
)
def test_run_set_makes_the_runs_of_each_mode(tmp_path, mode, benchmark_runs, accuracy_runs):
    stubs, log = tmp_path / "bin", tmp_path / "calls.log"
    stubs.mkdir()
    for name in ("pytest", "python"):
        _stub(stubs, name, log)
    env = {**os.environ, "RUNS_DIR": str(tmp_path / "runs"),
           "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    script = str(ROOT / "scripts" / "run_set.sh")
    done = subprocess.run(["bash", script, "box4", mode, "--bench-threads", "3"], check=False,
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    benchmarks = [call for call in calls if call.startswith("pytest ")]
    accuracy = [call for call in calls if call.startswith("python ")]
    assert (len(benchmarks), len(accuracy)) == (benchmark_runs, accuracy_runs)
    for call in benchmarks:  # each saved under the prefix, the options passed on
        assert f"--benchmark-json={tmp_path}/runs/benchmarks/box4-" in call
        assert call.endswith("--bench-threads 3")
    assert all("--bench-threads" not in call and "-m nnbench.accuracy" in call
               for call in accuracy)  # fmt: skip
    if mode == "full":
        assert "--kernel all --compare-torch" in accuracy[0]
        assert sum("--preset best" in call for call in accuracy) == 2


def _load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_probe():
    return _load_script("probe_threads")


def test_probe_counts_a_layer_method_called_inside_another_once(monkeypatch):
    """Conv2D's backward calls its own parameter gradient: that time is counted once, in the
    outer call (a fake clock that only the layer's methods advance)."""
    probe = _load_probe()
    clock = [0.0]
    monkeypatch.setattr(probe.time, "perf_counter", lambda: clock[0])

    class Layer:
        def backward_parameters_impl(self, grad):
            clock[0] += 1.0

        def backward_impl(self, grad):
            clock[0] += 2.0
            self.backward_parameters_impl(grad)

        def _forward(self, x):
            clock[0] += 4.0

        def update_parameters(self):
            clock[0] += 8.0

    layer = Layer()
    model = type("Model", (), {})()
    model.layers = [layer]
    seconds = probe.defaultdict(list)
    probe._time_layers(model, seconds)
    layer._forward(None)
    layer.backward_impl(None)
    layer.update_parameters()
    assert dict(seconds) == {
        "00 Layer forward": [4.0],
        "00 Layer backward": [3.0],  # 2 s of its own and the 1 s of the nested call, once
        "00 Layer update": [8.0],
    }


@pytest.mark.skipif("torch" not in kernels.available(), reason="the step probe needs torch")
def test_probe_threads_times_each_setting_and_each_layer(tmp_path):
    out = tmp_path / "probe.json"
    chunk_mb = backend_im2col.CHUNK_BYTES / 2**20
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_threads.py"), "--calls", "1",
         "--threads", "1", "--chunk-mb", f"{chunk_mb:g}",
         "--thread-costs", str(threads.THREAD_COST_ELEMENTS), "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    rows = record["settings"]
    # recipe layers x (3 backends x 3 passes + winograd's own 2), one setting each
    assert len(rows) == 3 * (3 * 3 + 2)
    assert {row["pass"] for row in rows if row["backend"] == "winograd"} == {
        "forward",
        "grad_inputs",
    }
    assert all(row["median_ms"] > 0 and row["threads"] == 1 for row in rows)
    # one setting given: im2col's shipped pair, and any backend that ships the same chunk size
    shipped = {row["backend"] for row in rows if row["shipped"]}
    assert shipped == {
        name
        for name, module in _load_probe().BACKENDS.items()
        if module.CHUNK_BYTES == backend_im2col.CHUNK_BYTES
    }
    (step,) = record["step"]
    assert step["threads"] == 1 and step["engine_ms"] > 0 and step["twin_ms"] > 0
    (pool,) = record["pool"]
    assert (pool["threads"], pool["slices"]) == (1, 1) and pool["round_trip_us"] > 0
    sizes = _load_probe().COPY_SIZES
    for field in ("copy_ns_per_element", "round_trip_elements", "split_copy_speedup"):
        assert set(pool[field]) == set(sizes) and all(v > 0 for v in pool[field].values())
    layers = step["layers_ms"]
    assert any("Conv2D forward" in key for key in layers)
    assert any("BatchNorm backward" in key for key in layers)
    assert re.search(r"\d\.\d\d\* ", done.stdout)  # the shipped setting is marked in the table


@pytest.mark.parametrize("value", ["0,2", "nan", "2,x"])
def test_probe_threads_names_a_bad_argument(value):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_threads.py"), "--chunk-mb", value],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"--chunk-mb must be comma-separated positive numbers, got '{value}'" in done.stderr


def _load_ceiling():
    return _load_script("probe_loop_ceiling")


def _multiply_adds(operands) -> int:
    lefts, right, _ = operands
    return sum(a.shape[0] * a.shape[1] * right.shape[1] for a in lefts)


@pytest.mark.parametrize("rows", [False, True], ids=["per-offset", "per-kernel-row"])
@pytest.mark.parametrize("pass_", ["forward", "grad_inputs", "grad_kernels"])
def test_loop_ceiling_runs_exactly_the_loops_multiply_adds(pass_, rows):
    """The ceiling leaves out copies and sums, never multiply-adds: over a split of the batch
    into chunks, its GEMMs do the pass's n*oh*ow*c*d*kh*kw, into an output of their shape."""
    ceiling = _load_ceiling()
    rng = np.random.default_rng(0)
    for case in ceiling.recipe_cases("fast"):
        n = case.input_shape[0]
        chunks = [ceiling.gemm_operands(case, pass_, m, rng, rows) for m in (5, n - 5)]
        assert sum(_multiply_adds(ops) for ops in chunks) == case.flops // 2, case.label
        for lefts, right, out in chunks:
            assert len(lefts) == (3 if rows else 9)
            assert out.shape == (lefts[0] @ right).shape


@pytest.mark.skipif("torch" not in kernels.available(), reason="the ceiling needs torch")
def test_probe_loop_ceiling_times_every_recipe_pass(tmp_path):
    out = tmp_path / "ceiling.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_loop_ceiling.py"), "--rounds", "1",
         "--threads", "1", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    rows = record["passes"]
    assert [(row["layer"], row["pass"]) for row in rows] == [
        (case.label, pass_)
        for case in _load_ceiling().recipe_cases("fast")
        for pass_ in ("forward", "grad_inputs", "grad_kernels")
    ]
    assert all(row["threads"] == 1 for row in rows)
    assert all(row[f"{name}_ms"] > 0 for row in rows for name in ("torch", "loop", "ceiling"))
    assert all(re.fullmatch(r"(blas|pool/\d+)(/rows)?", row["ceiling_sharing"]) for row in rows)
    for name, mean in record["geometric_mean_vs_torch"].items():
        ratios = [row["torch_ms"] / row[f"{name}_ms"] for row in rows]
        assert min(ratios) <= mean <= max(ratios)
    assert record["machine"]["threads"] and "geometric mean over 9 passes" in done.stdout


@pytest.mark.parametrize(("option", "value"), [("--rounds", "0"), ("--threads", "0")])
def test_probe_loop_ceiling_names_a_bad_argument(option, value):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_loop_ceiling.py"), option, value],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{option} must be at least 1, got {value}" in done.stderr
