"""The machine stamp carried by every result, and the thread pinning every backend shares."""

from __future__ import annotations

import json
import platform
import subprocess

import pytest
import torch
from threadpoolctl import threadpool_info

from nnbench import machine


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


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc-only")
def test_tune_allocator_applies_on_glibc():
    assert machine.tune_allocator() is True


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
