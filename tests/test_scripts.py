"""The developer scripts in scripts/: the run set's argument checks and the thread probe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kernels
from kernels import backend_im2col, backend_loop, threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["amd2", "everything"], "mode must be full, benchmarks or cores, got 'everything'"),
        (["amd 2"], "PREFIX may hold letters, digits"),
        (["-k"], "PREFIX may hold letters, digits"),
        ([], "usage: scripts/run_set.sh PREFIX"),
    ],
    ids=["mode", "space-in-prefix", "option-as-prefix", "no-prefix"],
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
    assert len(rows) == 3 * 2 * 3  # recipe layers x backends x passes, one setting each
    assert all(row["median_ms"] > 0 and row["threads"] == 1 for row in rows)
    # one setting given: im2col's shipped pair; loop ships another chunk size
    shipped = {row["backend"] for row in rows if row["shipped"]}
    assert shipped == ({"im2col"} if backend_loop.CHUNK_BYTES != backend_im2col.CHUNK_BYTES
                       else {"im2col", "loop"})  # fmt: skip
    (step,) = record["step"]
    assert step["threads"] == 1 and step["engine_ms"] > 0 and step["twin_ms"] > 0
    layers = step["layers_ms"]
    assert any("Conv2D forward" in key for key in layers)
    assert any("BatchNorm backward" in key for key in layers)
    assert "*" in done.stdout  # the shipped setting is marked in the table


def test_probe_threads_names_a_bad_argument():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_threads.py"), "--chunk-mb", "0,2"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--chunk-mb must be comma-separated positive numbers, got '0,2'" in done.stderr
