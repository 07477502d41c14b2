"""The machine stamp carried by every result, and the thread pinning every backend shares."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info

from nnbench import machine

ROOT = Path(__file__).resolve().parents[1]


def threadpool_blas_count() -> int:
    return len([p for p in threadpool_info() if p["internal_api"] == "openblas"])


def _blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def test_machine_info_is_json_and_names_cpu_threads_versions():
    info = json.loads(json.dumps(machine.machine_info()))
    assert info["cpu_model"] and info["cores"] >= 1
    assert info["versions"]["numpy"] and info["versions"]["torch"]
    assert info["threads"]["torch_threads"] == torch.get_num_threads()
    assert "OPENBLAS_CORETYPE" in info["environment"]


def test_pinned_threads_sets_blas_and_torch_alike_and_restores():
    before = torch.get_num_threads()
    with machine.pinned_threads(1) as threads:
        assert threads == 1
        assert torch.get_num_threads() == 1
        assert _blas_threads() == {1}
    assert torch.get_num_threads() == before


def test_pinned_threads_rejects_zero():
    with pytest.raises(ValueError, match="threads must be >= 1"), machine.pinned_threads(0):
        pass


def test_thread_switch_sets_blas_and_torch_and_pinned_threads_restores():
    before, blas_before = torch.get_num_threads(), _blas_threads()
    with machine.pinned_threads(1):
        switch = machine.thread_switch(3)
        assert torch.get_num_threads() == 1  # nothing happens until it is called
        switch()
        assert torch.get_num_threads() == 3
        assert _blas_threads() == {3}
    assert torch.get_num_threads() == before and _blas_threads() == blas_before


def test_thread_switch_rejects_zero():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        machine.thread_switch(0)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc-only")
def test_tune_allocator_applies_on_glibc():
    # In a child process: the setting is process-wide and has no way back.
    probe = "from nnbench import machine; print(machine.tune_allocator())"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "True", run.stderr


def test_source_revision_names_the_checked_out_commit():
    revision = machine.source_revision()
    if revision["commit"] is None:
        pytest.skip("not a git checkout")
    assert len(revision["commit"]) == 40 and int(revision["commit"], 16) >= 0
    assert isinstance(revision["dirty"], bool)


def test_source_revision_is_dirty_for_code_changes_not_for_results(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    try:
        git("init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    (tmp_path / "nnbench").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "nnbench" / "code.py").write_text("x = 1\n")
    (tmp_path / "reports" / "result.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")
    assert machine.source_revision(tmp_path)["dirty"] is False
    (tmp_path / "reports" / "result.json").write_text('{"accuracy": 0.9}\n')
    assert machine.source_revision(tmp_path)["dirty"] is False
    (tmp_path / "nnbench" / "code.py").write_text("x = 2\n")
    assert machine.source_revision(tmp_path)["dirty"] is True
    # asked from a folder inside the checkout (say an installed copy), the same answer
    (tmp_path / "reports" / "result.json").write_text("{}\n")
    assert machine.source_revision(tmp_path / "reports")["dirty"] is True


# --- nnbench.runtime -----------------------------------------------------------------------

SPIN_PROBE = """
import resource, sys, time
import numpy as np  # loaded first, before nnbench: OpenBLAS starts with its default spin
from threadpoolctl import threadpool_limits

def idle_cpu_seconds():
    a = np.ones((512, 512), np.float32)
    with threadpool_limits(2):
        for _ in range(3):
            a @ a
        before = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(0.3)
        after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

from nnbench import runtime
spun = idle_cpu_seconds()
settings = runtime.configure()
print(round(spun, 3), round(idle_cpu_seconds(), 3), settings["openblas_thread_timeout"])
"""


def test_configure_stops_openblas_spinning_even_when_numpy_was_loaded_first():
    """After a threaded GEMM, OpenBLAS's idle threads spin (about 0.1 s of CPU while the process
    sleeps); after ``configure`` they sleep at once, though numpy was imported first."""
    import resource  # noqa: F401  (Unix only; skip elsewhere)

    if threadpool_blas_count() < 1 or machine.cpu_count() < 2:
        pytest.skip("needs OpenBLAS and two cores")
    run = subprocess.run(
        [sys.executable, "-c", SPIN_PROBE], capture_output=True, text=True, check=True, cwd=ROOT
    )
    spun, after, applied = run.stdout.split(" ", 2)
    assert "openblas" in applied, applied
    assert float(spun) > 0.03, run.stdout  # the default: a thread spins for ~0.1 s
    assert float(after) < 0.3 * float(spun), run.stdout


def test_configure_is_recorded_and_idempotent(monkeypatch):
    from nnbench import runtime

    monkeypatch.setattr(runtime, "_SETTINGS", {"configured": False})
    monkeypatch.setattr(machine, "tune_allocator", lambda: True)
    monkeypatch.setattr(runtime, "_retime_openblas", lambda: "16 for a test BLAS")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    with pytest.MonkeyPatch.context() as loaded:
        loaded.setitem(sys.modules, "torch", object())  # torch already loaded: too late
        first = runtime.configure()
    assert first == {
        "configured": True,
        "allocator": "glibc: mmap and trim thresholds raised",
        "openblas_thread_timeout": "16 for a test BLAS",
        "gomp_spincount": "default: torch was loaded before configure()",
    }
    monkeypatch.setattr(runtime, "_retime_openblas", lambda: pytest.fail("configured twice"))
    assert runtime.configure() == first
    assert machine.machine_info()["runtime"] == first


def test_configure_does_not_restart_openblas_while_other_threads_run(monkeypatch):
    """Restarting OpenBLAS's threads would hang a thread in the middle of a BLAS call."""
    import threading

    from nnbench import runtime

    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name="user-thread")
    other.start()
    try:
        applied = runtime._retime_openblas()
        assert (
            applied.startswith("not applied: other threads were running (")
            and "user-thread" in applied
        )
    finally:
        stop.set()
        other.join()


def test_configure_leaves_the_environment_as_it_was(monkeypatch):
    from nnbench import runtime

    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "")
    runtime._retime_openblas()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == ""
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT")
    runtime._retime_openblas()
    assert "OPENBLAS_THREAD_TIMEOUT" not in os.environ
