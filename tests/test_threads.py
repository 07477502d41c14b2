"""``kernels.threads`` (the shared thread budget), the thread settings made at import, and the
engine layers whose passes are split over threads: a split run equals the one-thread run.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import kernels
from kernels import threads
from nnbench import BatchNorm, Conv2D, Pooling2D, RandomFlip, ReLU
from nnbench.machine import pinned_threads
from nnbench.verify import assert_close
from tests.engine_helpers import built, normal, randomize_parameters

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n, parts", [(10, 3), (2, 5), (1, 1), (7, 7), (128, 2)])
def test_split_covers_the_range_in_order_without_empty_slices(n, parts):
    slices = threads.split(n, parts)
    assert len(slices) == min(n, parts)
    assert [i for s in slices for i in range(n)[s]] == list(range(n))
    sizes = [s.stop - s.start for s in slices]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    "n, min_rows, parts",
    [(128, 1, 64), (128, 8, 16), (20, 8, 2), (15, 8, 1), (7, 8, 1), (128, 200, 1)],
    ids=lambda value: str(value),
)
def test_parts_leave_each_slice_at_least_min_rows(n, min_rows, parts, monkeypatch):
    """64 cores and work worth any number of slices: n // min_rows of them at most."""
    monkeypatch.setattr(threads, "THREAD_COST_ELEMENTS", 1e-9)
    monkeypatch.setattr(threads, "budget", lambda: 64)
    assert threads.parts_for(n, 10**9, min_rows) == parts
    sizes = [s.stop - s.start for s in threads.split(n, parts)]
    assert min(sizes) >= min(min_rows, n)
    seen = []
    threads.over_batch(lambda s: seen.append(s.stop - s.start), n, 10**9, min_rows=min_rows)
    assert sorted(seen) == sorted(sizes)


def _cgroups(tmp_path, membership: str, files: dict[str, str]):
    """A fake /proc/self/cgroup and /sys/fs/cgroup tree; cgroup_cpus read on them."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "membership").write_text(membership)
    return threads.cgroup_cpus(root, tmp_path / "membership")


@pytest.mark.parametrize(
    "membership, files, cpus",
    [
        ("0::/\n", {"cpu.max": "max 100000\n"}, None),
        ("0::/\n", {"cpu.max": "400000 100000\n"}, 4),
        ("0::/\n", {"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ("0::/\n", {"cpu.max": "5000 100000\n"}, 1),
        ("0::/job/step\n", {"job/step/cpu.max": "max 100000", "job/cpu.max": "300000 100000"}, 3),
        ("0::/job\n", {"job/cpu.max": "800000 100000", "cpu.max": "200000 100000"}, 2),
        ("0::/gone\n", {"cpu.max": "600000 100000"}, 6),  # the namespace's root only
        # a cgroup outside the namespace: neither it nor the namespace's root is its own
        ("0::/../outside\n", {"cpu.max": "300000 100000", "../outside/cpu.max": "1 100000"}, None),
        ("0::/\n", {"unified/cpu.max": "200000 100000"}, 2),
        (
            "4:cpu,cpuacct:/docker/x\n",
            {
                "cpu,cpuacct/docker/x/cpu.cfs_quota_us": "250000",
                "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000",
            },
            3,
        ),
        ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ("0::/\n", {"cpu.max": "garbage"}, None),
        ("0::/\n", {"cpu.max": "100000 0"}, None),
        ("not a cgroup line\n", {}, None),
        ("5:memory:/x\n", {"memory/x/cpu.max": "100000 100000"}, None),
    ],
    ids=[
        "no quota",
        "4 CPUs",
        "1.5 CPUs",
        "a twentieth",
        "parent's",
        "smallest",
        "namespace root",
        "above the namespace",
        "hybrid v2",
        "v1",
        "v1 no quota",
        "garbage",
        "zero period",
        "unreadable",
        "not the cpu controller",
    ],
)
def test_cgroup_cpus_reads_the_smallest_quota_above_the_process(tmp_path, membership, files, cpus):
    assert _cgroups(tmp_path, membership, files) == cpus


def test_cgroup_cpus_without_cgroups_is_none(tmp_path):
    assert threads.cgroup_cpus(tmp_path / "none", tmp_path / "missing") is None


def test_budget_follows_the_blas_limit():
    if not [lib for lib in threadpool_info() if lib["user_api"] == "blas"]:
        pytest.skip("no BLAS visible to threadpoolctl")
    with pinned_threads(1):
        assert threads.budget() == 1
    with pinned_threads(threads.CORES + 3):
        assert threads.budget() == threads.CORES  # never more threads than cores


@pytest.fixture
def two_threads(monkeypatch):
    """Split every call in two, whatever its size and the number of cores."""
    monkeypatch.setattr(threads, "THREAD_COST_ELEMENTS", 1e-9)
    monkeypatch.setattr(threads, "budget", lambda: 2)


def test_over_batch_walks_every_row_once_in_chunks(two_threads):
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def body(part: slice) -> None:
        with lock:
            seen.append((part.start, part.stop, threading.current_thread().name))

    threads.over_batch(body, 13, elements=13, chunk=4)  # slices of 6 and 7 rows
    rows = sorted(i for start, stop, _ in seen for i in range(start, stop))
    assert rows == list(range(13))
    assert max(stop - start for start, stop, _ in seen) == 4
    names = {name for *_, name in seen}
    assert len(names) == 2  # the caller and one pool thread
    for name in names:  # each thread's chunks as equal as possible, the longer ones first
        sizes = [stop - start for start, stop, who in seen if who == name]
        assert max(sizes) - min(sizes) <= 1, sizes
        assert sizes == sorted(sizes, reverse=True), sizes


@pytest.mark.parametrize(
    "n, chunk, min_rows, sizes",
    [(20, 8, 1, [5, 5, 5, 5]), (20, 8, 8, [10, 10]), (26, 8, 8, [13, 13]), (34, 8, 8, [9, 8, 9, 8]),
     (20, None, 8, [10, 10]), (6, 4, 8, [6])],
    ids=lambda value: str(value),
)  # fmt: skip
def test_chunks_are_no_shorter_than_min_rows(n, chunk, min_rows, sizes, two_threads):
    """Two runs; each walked in chunks of about ``chunk`` rows, none cut below ``min_rows``
    (a batch shorter than that is one run, whole); ``shortest_run``: the fewest rows a call
    gets."""
    seen: list[int] = []
    lock = threading.Lock()

    def body(part: slice) -> None:
        with lock:
            seen.append(part.stop - part.start)

    threads.over_batch(body, n, 10**9, chunk, min_rows)
    assert sorted(seen) == sorted(sizes) and sum(seen) == n
    assert threads.shortest_run(n, 10**9, chunk, min_rows) == min(sizes)


def test_small_work_runs_inline(monkeypatch):
    monkeypatch.setattr(threads, "budget", lambda: 2)
    names = []
    threads.over_batch(lambda part: names.append(threading.current_thread().name), 8, 10)
    assert names == [threading.current_thread().name]


def test_sum_over_batch_adds_every_part(two_threads):
    values = np.arange(13, dtype=np.float64)
    total = threads.sum_over_batch(lambda s: np.array([values[s].sum()]), 13, 13, chunk=3)
    assert total.tolist() == [values.sum()]


def test_nested_calls_run_inline(two_threads):
    inner_parts = []

    def outer(part: slice) -> None:
        threads.over_batch(lambda s: inner_parts.append(s), 4, 4)

    threads.over_batch(outer, 2, 2)
    assert inner_parts == [slice(0, 4), slice(0, 4)]  # each outer slice ran the inner whole


def test_an_error_is_raised_after_every_slice_finished(two_threads):
    finished = []

    def body(part: slice) -> None:
        if part.start == 0:
            raise ValueError("first slice failed")
        time.sleep(0.05)
        finished.append(part)

    with pytest.raises(ValueError, match="first slice failed"):
        threads.over_batch(body, 2, 2)
    assert finished == [slice(1, 2)]


def test_blas_limit_is_restored_after_a_split_call(two_threads):
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not blas:
        pytest.skip("no BLAS visible to threadpoolctl")
    with pinned_threads(2):
        threads.over_batch(lambda s: None, 4, 4)
        assert all(
            lib["num_threads"] == 2 for lib in threadpool_info() if lib["user_api"] == "blas"
        )


class _FakeBlas:
    """Stands for a threadpoolctl BLAS controller: a thread limit that is simply stored."""

    def __init__(self, num_threads: int):
        self.num_threads = num_threads

    def set_num_threads(self, num_threads: int) -> None:
        self.num_threads = num_threads


def test_overlapping_split_calls_restore_the_blas_limit(two_threads, monkeypatch):
    """A enters a split call, B enters, A leaves, then B leaves: the limit must come back.

    (Each caller saving and restoring on its own would leave it at one thread: B saved the
    one A had set, and restored it last.)
    """
    blas = _FakeBlas(2)
    monkeypatch.setattr(threads, "_blas_controllers", [blas])
    a_inside, b_entered, a_left = threading.Event(), threading.Event(), threading.Event()
    limits_inside = []

    def body_a(part: slice) -> None:
        limits_inside.append(blas.num_threads)
        a_inside.set()
        b_entered.wait(10)

    def call_a() -> None:
        threads.over_batch(body_a, 2, 2)
        a_left.set()

    def body_b(part: slice) -> None:
        limits_inside.append(blas.num_threads)
        b_entered.set()
        if part.start == 0:  # B's own thread waits, so B's hold outlives A's
            a_left.wait(10)

    a = threading.Thread(target=call_a)
    a.start()
    a_inside.wait(10)
    threads.over_batch(body_b, 2, 2)
    a.join()
    assert a_left.is_set()
    assert limits_inside == [1, 1, 1, 1]  # held at one thread while any slice ran
    assert blas.num_threads == 2


def _split_in_child(queue) -> None:
    threads.THREAD_COST_ELEMENTS = 1e-9  # the child has its own copy of the module
    seen = []
    threads.run(lambda s: seen.append(s), [slice(0, 1), slice(1, 2)])
    queue.put(sorted((s.start, s.stop) for s in seen))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_split_calls_work_in_a_forked_child(two_threads):
    """The child of a fork gets a pool of its own (the parent's threads do not exist there)."""
    threads.over_batch(lambda s: None, 4, 4)  # the parent's pool has started a thread
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_split_in_child, args=(queue,))
    with warnings.catch_warnings():  # Python 3.12+ warns about forking a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in a split call")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == [(0, 1), (1, 2)]


def _threads_in_child(queue) -> None:
    seen = set()
    threads.run(lambda item: seen.add(threading.get_ident()), [0, 1])
    queue.put(len(seen))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.skipif(threads.CORES < 2, reason="needs two cores")
def test_a_child_forked_inside_a_slice_splits_its_own_calls(two_threads):
    """A process forked from a pool thread is not inside a slice of its own: its calls use
    a pool of their own, not the one-after-the-other path of a nested call."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    exitcodes = []

    def fork_here(item: int) -> None:
        if item == 1:  # on the pool's thread
            child = context.Process(target=_threads_in_child, args=(queue,))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                child.start()
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
            exitcodes.append(child.exitcode)

    threads.run(fork_here, [0, 1])
    assert exitcodes == [0]
    assert queue.get(timeout=5) == 2  # its two items ran on two threads


class _InterruptOnce:
    """A worker's done lock whose first wait is interrupted (as by Ctrl-C)."""

    def __init__(self, lock):
        self.lock, self.interrupted = lock, False

    def acquire(self, *args):
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return self.lock.acquire(*args)

    def release(self):
        self.lock.release()


def test_an_interrupted_wait_still_waits_for_every_slice(two_threads):
    """A Ctrl-C while the caller waits must not leave a worker's 'done' behind: the next call
    would take it and return while its own slice was still running."""
    threads.run(lambda item: None, [0, 1])  # the pool has its worker now
    worker = threads._POOL.workers[0]
    real = worker.done
    worker.done = _InterruptOnce(real)
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt):
            threads.run(lambda i: (time.sleep(0.05 * i), finished.append(i)), [0, 1])
        assert sorted(finished) == [0, 1]  # it returned only once the worker's slice was done
    finally:
        worker.done = real
    done = [0, 0]
    threads.run(lambda i: (time.sleep(0.05 * i), done.__setitem__(i, 1)), [0, 1])
    assert done == [1, 1]


def _budget_in_child(queue) -> None:
    queue.put(threads.budget())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_during_a_blas_hold_gives_the_child_its_limit_back(monkeypatch):
    blas = _FakeBlas(2)
    monkeypatch.setattr(threads, "_blas_controllers", [blas])
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with threads.single_threaded_blas():  # another thread's split call, in effect
        child = context.Process(target=_budget_in_child, args=(queue,))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            child.start()
        child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == min(2, threads.CORES)
    assert blas.num_threads == 2


def test_importing_changes_nothing_outside_nnbench():
    """``import nnbench`` (and ``kernels``) sets no environment variable, loads neither torch
    nor scipy (backends load theirs on first use) and starts no thread."""
    probe = """
import os, sys, threading
before = dict(os.environ)
import nnbench, kernels
from nnbench import runtime
print(dict(os.environ) == before, "torch" in sys.modules, "scipy" in sys.modules,
      threading.active_count(), runtime.settings())
"""
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert run.stdout.split("\n")[0] == "True False False 1 {'configured': False}", run.stdout


_OPENMP_PROBE = """
import os, time
import numpy as np, torch
import kernels

torch.set_num_threads(2)
x = np.ones((64, 16, 32, 32), np.float32)
k = np.ones((16, 16, 3, 3), np.float32)


def tasks():
    return len(os.listdir("/proc/self/task"))


def settled(expected, seconds=5.0):  # a released worker leaves /proc once it has exited
    end = time.monotonic() + seconds
    while tasks() != expected and time.monotonic() < end:
        time.sleep(0.01)
    return tasks()


before = tasks()
torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(k))
with_workers = tasks()  # plain torch: its OpenMP worker stays (and spins)
kernels.convolve(x, k, 1, backend="torch")
print(before, with_workers, settled(before))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
@pytest.mark.parametrize("tuned", [False, True], ids=["default-spin", "GOMP_SPINCOUNT-set"])
def test_the_torch_backend_ends_openmp_workers_whose_spin_was_not_tuned(tuned):
    """Torch loaded first, libgomp at its default spin: after a torch-backend call its OpenMP
    workers are gone (they would spin on the cores the numpy passes need). With the spin tuned
    when libgomp loaded (``GOMP_SPINCOUNT``, as ``nnbench.runtime.configure`` sets it), they
    stay, as torch left them."""
    if "torch" not in kernels.available():
        pytest.skip("the torch backend is not available")
    env = {k: v for k, v in os.environ.items() if k not in threads.OPENMP_WAIT_SETTINGS}
    if tuned:
        env["GOMP_SPINCOUNT"] = "10000"
    run = subprocess.run([sys.executable, "-c", _OPENMP_PROBE], capture_output=True, text=True,
                         cwd=ROOT, env=env, check=True)  # fmt: skip
    before, with_workers, after = map(int, run.stdout.split())
    if with_workers == before:
        pytest.skip("torch ran this convolution without OpenMP workers")
    assert after == (with_workers if tuned else before), run.stdout


@pytest.fixture
def blas_limits_seen(monkeypatch) -> list[int]:
    """The BLAS thread limit in force at each GEMM nnbench runs (``_profile.matmul`` and
    ``_profile.gemm_into``)."""
    if not [lib for lib in threadpool_info() if lib["user_api"] == "blas"]:
        pytest.skip("no BLAS visible to threadpoolctl")
    seen = []
    matmul, gemm_into = threads._profile.matmul, threads._profile.gemm_into

    def spy_matmul(a, b, out=None):
        seen.append(threads._blas()[0].num_threads)
        return matmul(a, b, out=out)

    def spy_gemm_into(a, b, out, accumulate):
        seen.append(threads._blas()[0].num_threads)
        return gemm_into(a, b, out, accumulate)

    monkeypatch.setattr(threads._profile, "matmul", spy_matmul)
    monkeypatch.setattr(threads._profile, "gemm_into", spy_gemm_into)
    return seen


def test_blas_threads_never_run_inside_nnbench(blas_limits_seen, monkeypatch):
    """Every BLAS call made inside nnbench's compute sees a BLAS limit of one thread: a split
    call's slices, a call too small to split, and a large GEMM (split by ``threads.matmul``)."""
    monkeypatch.setattr(threads, "budget", lambda: 2)
    with pinned_threads(2):
        threads.over_batch(lambda s: threads._profile.matmul(np.ones((2, 2)), np.ones((2, 2))),
                           1, 1)  # fmt: skip
        a = np.ones((64, 512), np.float32)
        threads.matmul(a, np.ones((512, 4096), np.float32))
        threads.matmul(a, np.ones((512, 8), np.float32))
    seen = blas_limits_seen
    assert seen and set(seen) == {1}, seen


def test_blas_within_cores_caps_the_limit_and_shares_holds_with_one_thread(monkeypatch):
    blas = _FakeBlas(2 * threads.CORES)
    monkeypatch.setattr(threads, "_blas_controllers", [blas])
    with threads.blas_within_cores():
        assert blas.num_threads == threads.CORES
        with threads.single_threaded_blas():  # the lowest limit held wins
            assert blas.num_threads == 1
        assert blas.num_threads == threads.CORES
    assert blas.num_threads == 2 * threads.CORES
    blas.num_threads = 1  # a limit below the cores is left alone
    with threads.blas_within_cores():
        assert blas.num_threads == 1


def test_holds_of_two_threads_released_out_of_order_restore_the_limit(monkeypatch):
    blas = _FakeBlas(threads.CORES + 4)
    monkeypatch.setattr(threads, "_blas_controllers", [blas])
    first, second = threads.blas_within_cores(), threads.single_threaded_blas()
    first.__enter__()
    second.__enter__()  # in effect another thread's split call
    assert blas.num_threads == 1
    first.__exit__(None, None, None)
    assert blas.num_threads == 1  # the one-thread hold is still in force
    second.__exit__(None, None, None)
    assert blas.num_threads == threads.CORES + 4


def test_a_blas_whose_limit_cannot_be_read_is_held_and_left_alone(monkeypatch):
    blas = _FakeBlas(None)  # threadpoolctl reads None where the library has no getter
    monkeypatch.setattr(threads, "_blas_controllers", [blas])
    with threads.single_threaded_blas():
        assert blas.num_threads == 1
    assert blas.num_threads == 1  # nothing to restore


class _FailingBlas(_FakeBlas):
    """A fake BLAS whose first ``fail_sets`` sets of its limit fail."""

    def __init__(self, num_threads: int, fail_sets: int = 0):
        super().__init__(num_threads)
        self.fail_sets = fail_sets

    def set_num_threads(self, num_threads: int) -> None:
        if self.fail_sets:
            self.fail_sets -= 1
            raise OSError("set_num_threads failed")
        super().set_num_threads(num_threads)


def test_a_hold_whose_set_fails_leaves_every_limit_as_it_was(monkeypatch):
    held, failing = _FailingBlas(3), _FailingBlas(5, fail_sets=1)
    monkeypatch.setattr(threads, "_blas_controllers", [held, failing])
    with pytest.raises(OSError, match="set_num_threads failed"), threads.single_threaded_blas():
        pytest.fail("the body ran although the hold failed")
    assert (held.num_threads, failing.num_threads) == (3, 5)
    assert not threads._blas_holds
    with threads.single_threaded_blas():  # later holds work as before
        assert (held.num_threads, failing.num_threads) == (1, 1)
    assert (held.num_threads, failing.num_threads) == (3, 5)


def test_a_failed_inner_hold_leaves_the_outer_hold_in_force(monkeypatch):
    held, failing = _FailingBlas(8), _FailingBlas(8)
    monkeypatch.setattr(threads, "_blas_controllers", [held, failing])
    with threads.blas_within_cores():
        outer = (held.num_threads, failing.num_threads)
        failing.fail_sets = 1
        with pytest.raises(OSError), threads.single_threaded_blas():
            pytest.fail("the body ran although the hold failed")
        assert (held.num_threads, failing.num_threads) == outer
    assert (held.num_threads, failing.num_threads) == (8, 8)


def test_leaving_a_hold_taken_before_a_fork_is_harmless_in_the_child(monkeypatch):
    blas = _FakeBlas(3)
    monkeypatch.setattr(threads, "_blas_controllers", [blas])
    with threads.single_threaded_blas():
        threads._after_fork_in_child()  # what the child runs, here in-process
        assert blas.num_threads == 3
    assert blas.num_threads == 3
    with threads.single_threaded_blas():  # later holds work as before
        assert blas.num_threads == 1
    assert blas.num_threads == 3


@pytest.mark.parametrize("backend", ["im2col", "loop"])
def test_whole_batch_gemms_run_on_at_most_the_cores(backend, blas_limits_seen, monkeypatch, rng):
    """Oversubscribed (more threads asked for than cores), the GEMMs a backend leaves to the
    BLAS's own threads run at the cores, and the limit asked for is back afterwards."""
    monkeypatch.setattr(threads, "whole_batch", lambda n, elements, per_row, dtype: n)
    x = rng.standard_normal((4, 16, 12, 12)).astype(np.float32)
    k = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    with pinned_threads(threads.CORES + 1):
        oversubscribed = threads._blas()[0].num_threads  # OpenBLAS caps it at its build's most
        if oversubscribed <= threads.CORES:
            pytest.skip(f"this BLAS runs at most {oversubscribed} threads, not more than the cores")
        kernels.convolve(x, k, 1, backend=backend)
        assert threads._blas()[0].num_threads == oversubscribed
    seen = blas_limits_seen
    assert seen and max(seen) <= threads.CORES, seen


def _f32(rng, *shape) -> np.ndarray:
    return rng.integers(-4, 5, shape).astype(np.float32)  # integer sums: exact in any order


def test_matmul_splits_large_gemms_and_matches_numpy(two_threads, rng):
    a, b = _f32(rng, 40, 300), _f32(rng, 300, 1000)
    calls = []
    run = threads.run
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            threads, "run", lambda body, items: (calls.append(len(items)), run(body, items))
        )
        patch.setattr(threads, "THREAD_COST_MULTIPLY_ADDS", 1)
        result = threads.matmul(a, b)
    assert calls == [2]
    np.testing.assert_array_equal(result, a.astype(np.float64) @ b)


# (a, b, out) builders; what each is: the route _profile.matmul should take
GEMM_CASES = {
    "weight-gradient (27, M) @ (M, 16)": (lambda r: (_f32(r, 27, 900), _f32(r, 900, 16), None), "dot"),
    "transposed operands": (lambda r: (_f32(r, 900, 27).T, _f32(r, 16, 900).T, None), "dot"),
    "gemv into a row": (lambda r: (_f32(r, 16, 900), _f32(r, 900), np.empty(16, np.float32)), "dot"),
    "out given": (lambda r: (_f32(r, 27, 900), _f32(r, 900, 16), np.empty((27, 16), np.float32)), "dot"),
    "strided operand (np.dot would copy it)": (lambda r: (_f32(r, 16, 1000)[:, :900], _f32(r, 900), None), "matmul"),
    "strided out": (lambda r: (_f32(r, 27, 900), _f32(r, 900, 16), np.empty((27, 32), np.float32)[:, :16]), "matmul"),
    "out of another dtype": (lambda r: (_f32(r, 27, 90), _f32(r, 90, 16), np.empty((27, 16))), "matmul"),
    "wide output": (lambda r: (_f32(r, 16, 27), _f32(r, 27, 2000), None), "matmul"),
    "stacked": (lambda r: (_f32(r, 4, 8, 30), _f32(r, 4, 30, 5), None), "matmul"),
}  # fmt: skip


@pytest.mark.parametrize("case", GEMM_CASES)
def test_profile_matmul_takes_np_dot_for_small_outputs_and_equals_matmul(case, rng, monkeypatch):
    """Small outputs go to np.dot (which releases the GIL, see ``kernels._profile``) where it
    takes the operands and output as they are; everything else to np.matmul; same result."""
    from kernels import _profile

    make, route = GEMM_CASES[case]
    a, b, out = make(rng)
    taken = []
    for name in ("dot", "matmul"):
        real = getattr(np, name)
        monkeypatch.setattr(np, name, lambda *args, _real=real, _name=name, **kw: (
            taken.append(_name), _real(*args, **kw))[1])  # fmt: skip
    result = _profile.matmul(a, b, out=out)
    monkeypatch.undo()
    assert taken == [route]
    if out is not None:
        assert result is out or np.shares_memory(result, out)
    np.testing.assert_array_equal(result, np.matmul(a.astype(np.float64), b))


@pytest.mark.parametrize("shape", [(27, 16), (16, 1), (64, 32)], ids=lambda s: f"out{s}")
def test_profile_matmul_lets_other_threads_run_during_the_blas_call(shape, rng):
    """Another Python thread runs while the GEMM runs (np.matmul with an output of at most 500
    elements holds the GIL through the whole BLAS call; the (64, 32) output, released by numpy
    itself, checks the test). Decided without a clock (``_another_thread_ran_during``), over
    up to 200 GEMMs, so that a waiting thread that is slow to be scheduled still finds one.
    Each GEMM reduces over 200k values, a millisecond or so: the waiting thread must wake up
    within one call, and a 20k-long GEMV (tens of microseconds) was sometimes over first."""
    from kernels import _profile

    m, n = shape
    a = _f32(rng, m, 200_000)
    b = _f32(rng, 200_000, n)[:, 0] if n == 1 else _f32(rng, 200_000, n)
    assert _another_thread_ran_during(lambda: _profile.matmul(a, b))


def _another_thread_ran_during(call, tries: int = 200) -> bool:
    """Whether a waiting Python thread ran while ``call`` ran (up to ``tries`` calls). No clock:
    with a switch interval of minutes, the waiting thread can take the GIL only when ``call``
    releases it, and then counts to the end before this thread gets it back."""
    go, counted = threading.Event(), []
    counter = threading.Thread(target=lambda: (go.wait(), counted.append(sum(range(10**6)))))
    counter.start()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(300)
    try:
        go.set()  # the counter is runnable now, but this thread holds the GIL
        for _ in range(tries):
            call()
            if counted:
                break
        return bool(counted)
    finally:
        sys.setswitchinterval(interval)
        counter.join()


@pytest.mark.parametrize("channels", [16, 64])
@pytest.mark.parametrize("product", ["sum", "dot"])
def test_a_stacked_product_releases_the_gil_from_gil_free_rows(product, channels, rng):
    """numpy's threshold, as ``threads.NUMPY_GIL_OUTPUTS`` states it: a stacked product of the
    engine's per-channel sums over ``gil_free_rows`` images lets another thread run, one image
    fewer does not (fails if a numpy release moves the threshold)."""
    rows = threads.gil_free_rows(channels)
    seen = []
    for images in (rows - 1, rows):
        a = _f32(rng, images * channels, 4096).reshape(images, channels, 1, 4096)
        if product == "sum":
            operands = a[:, :, 0], np.ones(4096, np.float32)
        else:
            operands = a, a.reshape(images, channels, 4096, 1)
        seen.append(_another_thread_ran_during(functools.partial(np.matmul, *operands)))
    assert seen == [False, True]


@pytest.mark.parametrize("channels", [3, 16, 64])
def test_channel_sums_cut_no_slice_that_holds_the_gil(channels, rng, monkeypatch):
    """The engine's per-channel sums (BatchNorm, the convolution bias) are cut over threads
    however little work they hold, but each slice's product has more outputs than numpy's
    threshold: a slice with fewer would hold the GIL and run alone. Same sums as one thread."""
    from nnbench import layers

    a, b = (normal(rng, (96, channels, 3, 4), "float32") for _ in range(2))
    expected = layers._channel_sum(a), layers._channel_dot(a, b)
    monkeypatch.setattr(threads, "THREAD_COST_ELEMENTS", 1e-9)
    monkeypatch.setattr(threads, "budget", lambda: 16)
    outputs = []
    real = np.matmul
    monkeypatch.setattr(
        np, "matmul", lambda *args, out: outputs.append(out.size) or real(*args, out=out)
    )
    got = layers._channel_sum(a), layers._channel_dot(a, b)
    monkeypatch.undo()
    slices = 96 // threads.gil_free_rows(channels)
    assert len(outputs) == 2 * max(1, slices)
    assert min(outputs) > threads.NUMPY_GIL_OUTPUTS or slices < 2
    for one, split in zip(expected, got, strict=True):
        np.testing.assert_array_equal(split, one)


# --- engine layers split over threads ------------------------------------------------------


LAYERS = {
    "relu": (lambda dtype: ReLU(input_shape=(3, 6, 5)), False),
    "batchnorm-train": (lambda dtype: BatchNorm(input_shape=(3, 6, 5)), True),
    "batchnorm-infer": (lambda dtype: BatchNorm(input_shape=(3, 6, 5)), False),
    "maxpool2": (lambda dtype: Pooling2D(2, "max", input_shape=(3, 6, 4)), True),
    "maxpool3": (lambda dtype: Pooling2D(3, "max", input_shape=(3, 6, 9)), True),
    "avgpool2": (lambda dtype: Pooling2D(2, "avg", input_shape=(3, 6, 4)), True),
    "conv2d": (lambda dtype: Conv2D(4, 3, input_shape=(3, 6, 5), kernel="im2col"), True),
    "randomflip": (lambda dtype: RandomFlip(input_shape=(3, 6, 5)), True),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", LAYERS)
def test_layer_split_over_threads_equals_one_thread(name, dtype, rng, monkeypatch):
    """Forward, input gradient and parameter gradients are bit for bit those of one thread
    (a convolution, whose backend chunks its GEMMs, up to rounding)."""
    make, training = LAYERS[name]
    n = 5
    results = []
    for split in (False, True):
        with monkeypatch.context() as patch:
            if split:
                patch.setattr(threads, "THREAD_COST_ELEMENTS", 1e-9)
                patch.setattr(threads, "budget", lambda: 2)
                patch.setattr(threads, "NUMPY_GIL_OUTPUTS", 0)  # per-channel sums cut too
            layer = built(make(dtype), dtype)
            randomize_parameters(layer, np.random.default_rng(1))
            layer.is_training = training
            if name == "batchnorm-infer":
                layer.running_mean[...] = np.random.default_rng(2).standard_normal(3)
            data = np.random.default_rng(3)
            x = normal(data, (n, *layer.input_shape), dtype)
            x[0, 0, 0, :2] = 0  # ties and zeros: ReLU's x >= 0 and max-pool's first maximum
            np.random.seed(4)  # RandomFlip draws from numpy's global generator
            y = layer.forward(x)
            g = normal(data, y.shape, dtype)
            gx = layer.backward(g)
            grads = [getattr(layer, f"{p}_grad").copy() for p in layer.parameter_names]
            results.append((y, gx, grads))
    (y1, gx1, grads1), (y2, gx2, grads2) = results
    if name == "conv2d":
        # The backend splits its work into chunks too, and a GEMM over fewer columns may round
        # differently (OpenBLAS's edge kernels); the weight gradient adds per-chunk parts in
        # another order (kernels.threads.sum_over_batch). Equal up to rounding.
        k = layer.kernels.shape
        reductions = {"y": k[1] * k[2] * k[3], "gx": k[0] * k[2] * k[3]}
        reductions |= {"kernels": n * x.shape[2] * x.shape[3], "biases": y.size // y.shape[1]}
        pairs = [("y", y2, y1), ("gx", gx2, gx1)] + list(zip(layer.parameter_names, grads2, grads1))
        for label, a, b in pairs:
            assert_close(label, a, b, dtype=dtype, backend="im2col", reduction=reductions[label])
        return
    np.testing.assert_array_equal(y2, y1)
    np.testing.assert_array_equal(gx2, gx1)
    for parameter, a, b in zip(layer.parameter_names, grads2, grads1, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=parameter)
