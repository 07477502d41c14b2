"""``backend="auto"`` (nnbench.auto): measured choice of the fastest verified backend."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import kernels
from nnbench import Conv2D, auto
from nnbench.machine import pinned_threads
from nnbench.verify import ConvCase, compare, operands

ROOT = Path(__file__).resolve().parents[1]
CASE = ConvCase((4, 3, 9, 9), (5, 3, 3, 3), 1)
#: The fingerprint of a machine that is not this one.
OTHER = {"cpu_model": "another CPU", "cores": 2, "machine": "riscv64", "versions": {}, "blas": []}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test plans from scratch, with its own cache file."""
    monkeypatch.setenv(auto.CACHE_ENV, str(tmp_path / "plans.json"))
    auto.forget()
    with pinned_threads(1):
        yield tmp_path / "plans.json"
    auto.forget()


def _saved(private_cache) -> tuple[dict, dict]:
    """The cache file's content, and this machine's plans in it (to edit, then write back)."""
    saved = json.loads(private_cache.read_text())
    assert saved["schema"] == auto.SCHEMA
    (mine,) = [entry for entry in saved["machines"] if entry["machine"] == auto._fingerprint()]
    return saved, mine["plans"]


@pytest.mark.parametrize("pass_", ["forward", "grad_inputs", "grad_kernels"])
def test_auto_computes_the_convolution_with_a_verified_backend(pass_, monkeypatch):
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 0.0)
    ops = operands(CASE)
    call = {"forward": kernels.convolve, "grad_inputs": kernels.grad_inputs,
            "grad_kernels": kernels.grad_kernels}[pass_]  # fmt: skip
    for _ in range(auto.TRIAL_CALLS * len(kernels.available())):  # the trial, if there is one
        call(*ops.arguments(pass_), CASE.padding, backend="auto")
    assert auto.pending() == []
    result = call(*ops.arguments(pass_), CASE.padding, backend="auto")
    chosen = auto.plan(pass_, CASE.input_shape, CASE.kernel_shape, CASE.padding)
    assert chosen.backend in kernels.available() and chosen.source == "measured"
    assert chosen.seconds[chosen.backend] is not None and chosen.backend in chosen.finalists
    compare(pass_, result, ops.reference(pass_), dtype="float32", backend=chosen.backend,
            reduction=CASE.reduction_length(pass_)).check()  # fmt: skip


def test_a_settled_choice_is_reused_and_persisted(private_cache, monkeypatch):
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 0.0)
    first = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1) is first
    assert first.settled == (len(first.finalists) == 1) and first.trial is None
    assert private_cache.exists() == first.settled  # persisted once settled
    ops = operands(CASE)
    auto.settle(lambda: kernels.convolve(*ops.arguments("forward"), 1, backend="auto"))
    settled = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert settled.settled and (settled.trial is None) == (len(settled.finalists) == 1)
    assert _saved(private_cache)[1][settled.key]["backend"] == settled.backend
    auto.forget()  # a new process, in effect
    again = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert again.source == "cache" and again.backend == settled.backend


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "not a valid cache"),
        ('{"schema": "other/9"}', "not a valid cache"),
        ('{"schema": "nnbench.auto/1", "plans": {}}', "the way schema 'nnbench.auto/1' says"),
        ("[1, 2]", "not a valid cache"),
        (
            '{"schema": "nnbench.auto/4", "machine": {}, "plans": {}}',
            "the way schema 'nnbench.auto/4' says",
        ),
        (json.dumps({"schema": auto.SCHEMA, "machines": {}}), "'machines' is not a list"),
        (json.dumps({"schema": auto.SCHEMA, "machines": [[]]}), "an entry of 'machines' is not"),
        (
            json.dumps({"schema": auto.SCHEMA, "machines": [{"machine": OTHER, "plans": []}]}),
            "the 'plans' of an entry is not an object",
        ),
    ],
    ids=[
        "corrupt",
        "foreign-schema",
        "older-schema",
        "not-an-object",
        "one-machine-schema",
        "machines-not-a-list",
        "entry-not-an-object",
        "plans-not-an-object",
    ],
)
def test_an_unusable_cache_is_ignored_with_a_warning(private_cache, content, reason):
    """Ignored whole, and replaced by a fresh file at the next write."""
    private_cache.write_text(content)
    with pytest.warns(RuntimeWarning, match=reason):
        chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert chosen.source == "measured"
    auto._persist(chosen.key, replace(chosen, settled=True))
    saved, plans = _saved(private_cache)
    assert len(saved["machines"]) == 1 and list(plans) == [chosen.key]


def _settled_plan(monkeypatch) -> auto.Plan:
    """CASE's forward plan, its trial (if any) run to the end on auto's calls."""
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 0.0)
    ops = operands(CASE)
    auto.settle(lambda: kernels.convolve(*ops.arguments("forward"), 1, backend="auto"))
    return auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)


def test_another_machines_plans_are_not_used_nor_warned_about_and_are_kept(
    private_cache, monkeypatch
):
    """A cache file shared with another machine, which settled this very key on "loop": this
    machine times the key itself, without a warning, and saves its plans beside the other's."""
    key = auto.key_for("forward", CASE.input_shape, CASE.kernel_shape, 1, "float32")
    theirs = {"machine": OTHER, "plans": {key: auto.Plan(key, "loop", {"loop": 1e-3}).as_dict()}}
    private_cache.write_text(json.dumps({"schema": auto.SCHEMA, "machines": [theirs]}))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "ignoring the auto-plan cache", RuntimeWarning)
        settled = _settled_plan(monkeypatch)
    assert settled.source == "measured"
    saved, mine = _saved(private_cache)
    assert saved["machines"][0] == theirs and saved["machines"][1]["plans"] == mine
    assert mine == {key: settled.as_dict()}
    auto.forget()  # a process of the other machine still finds its plans
    auto._loaded["fingerprint"] = OTHER
    assert auto._cached() == theirs["plans"]


def test_the_cache_keeps_the_machines_that_wrote_last(private_cache):
    """Each machine's write puts its entry last, its plans merged; past CACHE_MACHINES entries,
    those written longest ago go (machine 0 wrote again after machine 1, so 1 goes before 0)."""

    def write_on(machine: int, pass_: str = "forward") -> None:
        auto.forget()  # a process of that machine
        auto._loaded["fingerprint"] = {**OTHER, "cpu_model": f"CPU {machine}"}
        key = auto.key_for(pass_, CASE.input_shape, CASE.kernel_shape, 1, "float32")
        auto._persist(key, auto.Plan(key, "im2col", {"im2col": machine}))

    last = auto.CACHE_MACHINES
    for machine in range(last):
        write_on(machine)
    write_on(0, "grad_inputs")
    write_on(last)
    machines = json.loads(private_cache.read_text())["machines"]
    written = [*range(2, last), 0, last]
    assert [entry["machine"]["cpu_model"] for entry in machines] == [f"CPU {m}" for m in written]
    assert [len(entry["plans"]) for entry in machines[-2:]] == [2, 1]  # 0's first plan is kept


def _add_backend(tmp_path, monkeypatch, name: str, source: str) -> None:
    (tmp_path / f"backend_{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    monkeypatch.setattr(kernels, "__path__", [*kernels.__path__, str(tmp_path)])
    found, _ = kernels._registry.discover()
    monkeypatch.setattr(kernels, "_BACKENDS", found)


def test_each_schema_has_a_cache_file_of_its_own(tmp_path, monkeypatch):
    """Without ``NNBENCH_AUTO_CACHE``, plans go to the user cache in a file named for the
    schema: a version of nnbench that plans another way (another schema) writes its own file
    instead of replacing this one's plans on every run."""
    import platformdirs

    monkeypatch.delenv(auto.CACHE_ENV)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda name: str(tmp_path / name))
    mine = auto.cache_path()
    monkeypatch.setattr(auto, "SCHEMA", "nnbench.auto/999")
    other = auto.cache_path()
    assert mine.parent == other.parent == tmp_path / "nnbench"
    assert mine != other and "999" in other.name and "999" not in mine.name


def test_a_slow_correct_backend_is_timed_and_not_chosen(tmp_path, monkeypatch):
    _add_backend(
        tmp_path,
        monkeypatch,
        "sleepy",
        """
        import time
        from kernels.backend_im2col import convolve as fast
        def convolve(inputs, kernels, padding):
            time.sleep(0.05)
            return fast(inputs, kernels, padding)
    """,
    )
    chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert chosen.backend != "sleepy" and "sleepy" not in chosen.failed
    assert "sleepy" in chosen.seconds  # a candidate: verified, then timed or given up on
    sys.modules.pop("kernels.backend_sleepy", None)


FINALIST = """
from kernels.backend_im2col import convolve as right
CALLS = []
FAIL = False
def convolve(inputs, kernels, padding):
    if FAIL:
        raise MemoryError("out of memory")
    CALLS.append(1)
    return right(inputs, kernels, padding)
"""


@pytest.fixture
def on_trial(tmp_path, monkeypatch):
    """A plan on trial whose race chose "sluggish" over "quick", two right backends that take
    4 ms and 1 ms a call on a scripted clock (auto's trial clock: the sum of the calls made).
    Yields the plan, a call of auto on its key, and the backends' modules."""
    durations = {"quick": 0.001, "sluggish": 0.004}
    for name in durations:
        _add_backend(tmp_path, monkeypatch, name, FINALIST)
    modules = {name: kernels.get(name).module for name in durations}
    monkeypatch.setattr(
        auto, "_clock", lambda: sum(len(modules[n].CALLS) * d for n, d in durations.items())
    )
    key = auto.key_for("forward", CASE.input_shape, CASE.kernel_shape, 1, "float32")
    raced = auto.Plan(key, "sluggish", {"quick": 0.01, "sluggish": 0.009},
                      finalists=("quick", "sluggish"), settled=False, race="sluggish")  # fmt: skip
    auto._plans[key] = raced
    ops = operands(CASE)

    def call():
        result = kernels.convolve(*ops.arguments("forward"), 1, backend="auto")
        compare("forward", result, ops.reference("forward"), dtype="float32", backend="im2col",
                reduction=CASE.reduction_length("forward")).check()  # fmt: skip

    yield raced, call, modules
    for name in durations:
        sys.modules.pop(f"kernels.backend_{name}", None)


def test_a_plan_on_trial_settles_on_the_finalist_faster_in_use(
    on_trial, monkeypatch, private_cache
):
    """The calls go to the finalists in turns (each result used, and right) until each has
    TRIAL_CALLS and TRIAL_SECONDS have passed; the one of smallest median in use is kept."""
    raced, call, modules = on_trial
    monkeypatch.setattr(auto, "TRIAL_CALLS", 3)
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 0.0495)  # 9 turns of 5 ms are not enough, 10 are
    for _ in range(19):
        call()
    calls = {name: len(module.CALLS) for name, module in modules.items()}
    assert sorted(calls.values()) == [9, 10]  # in turns
    assert auto.pending() == [raced.key] and auto.plan("forward", CASE.input_shape,
                                                       CASE.kernel_shape, 1) is raced  # fmt: skip
    assert not private_cache.exists()  # a plan on trial is not persisted
    call()
    settled = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert settled.settled and settled.backend == "quick" and auto.pending() == []
    assert settled.trial == pytest.approx({"quick": 0.001, "sluggish": 0.004})
    assert settled.seconds == raced.seconds  # the race's times are kept beside the trial's
    assert settled.race == "sluggish"  # and so is its choice
    saved = _saved(private_cache)[1][raced.key]
    assert saved["backend"] == "quick" and saved["settled"] and saved["trial"] == settled.trial
    call()
    assert len(modules["quick"].CALLS) == 11 and len(modules["sluggish"].CALLS) == 10
    # a call that planned before another settled the key runs the settled choice, no new trial
    ops = operands(CASE)
    auto._on_trial(raced, "forward", *ops.arguments("forward"), 1)
    assert len(modules["quick"].CALLS) == 12 and auto._trials == {}
    auto.forget()  # a new process, in effect: the cached choice goes on trial again
    again = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert (again.source, again.backend, again.settled) == ("cache", "quick", False)
    assert again.finalists == raced.finalists and again.trial is None
    assert again.race == "sluggish" and again.seconds == raced.seconds


def test_a_cached_choice_goes_on_trial_again_and_is_put_right(on_trial, monkeypatch, private_cache):
    """A choice settled in a busy moment (the cache says "sluggish", which now takes 4x
    "quick"'s time) is tried again against its cached finalists on a new process's calls; the
    faster in use is kept, and the cache rewritten."""
    raced, call, modules = on_trial
    monkeypatch.setattr(auto, "TRIAL_CALLS", 3)
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 0.0)
    busy = {"quick": 0.02, "sluggish": 0.004}
    auto._persist(raced.key, replace(raced, backend="sluggish", trial=busy, settled=True))
    auto.forget()
    cached = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert (cached.source, cached.backend, cached.settled) == ("cache", "sluggish", False)
    assert cached.finalists == raced.finalists and auto.pending() == [raced.key]
    verified = {name: len(module.CALLS) for name, module in modules.items()}  # checks' calls
    assert auto.settle(call) == 6  # 3 turns of the 2 finalists
    assert {name: len(m.CALLS) - verified[name] for name, m in modules.items()} == {
        "quick": 3, "sluggish": 3}  # fmt: skip
    settled = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert settled.settled and settled.backend == "quick" and settled.source == "cache"
    assert settled.trial == pytest.approx({"quick": 0.001, "sluggish": 0.004})
    saved = _saved(private_cache)[1][raced.key]
    assert saved["backend"] == "quick" and saved["trial"] == settled.trial


def test_a_trial_needs_its_calls_of_every_finalist(on_trial, monkeypatch):
    _, call, _ = on_trial
    monkeypatch.setattr(auto, "TRIAL_CALLS", 3)
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 0.0)
    assert auto.settle(call) == 6  # settle calls until the trial is over: 3 turns of 2 calls
    assert auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1).backend == "quick"
    assert auto.settle(call) == 1  # nothing on trial: one call


def test_settle_gives_up_on_a_trial_that_does_not_end(on_trial, monkeypatch):
    raced, call, _ = on_trial
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 1e9)
    with pytest.raises(RuntimeError, match=r"still on trial after 1 calls .*forward k3p1"):
        auto.settle(call, limit_s=0)
    assert auto.pending() == [raced.key]


def test_a_finalist_that_raises_is_dropped_from_the_trial(on_trial, monkeypatch):
    _, call, modules = on_trial
    modules["sluggish"].FAIL = True
    with pytest.raises(MemoryError):  # the call that went to it raises, as it would alone
        for _ in range(2):
            call()
    settled = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert (
        settled.settled and settled.backend == "quick" and "sluggish" not in (settled.trial or {})
    )
    call()
    assert auto.pending() == []


def test_the_candidates_within_the_trial_factor_go_on_trial(monkeypatch):
    """A race choice of 1 ms: a candidate at 2 ms (a backend the race caught in a slow moment)
    goes on trial with it; one at 3 ms and one given up on (None) do not."""
    race = {"im2col": 1e-3, "loop": 2e-3, "fft": 3e-3, "torch": None, "winograd": 3e-3}
    monkeypatch.setattr(auto, "_race", lambda calls: ({n: race[n] for n in calls}, ["im2col"]))
    monkeypatch.setattr(auto, "TRIAL_FACTOR", 2.5)
    chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert chosen.backend == chosen.race == "im2col" and not chosen.settled
    assert set(chosen.finalists) == {"im2col", "loop"}


def _add_wrong_im2col(tmp_path, monkeypatch, name: str, images: str, when: str = "True") -> None:
    """Backend ``name``: im2col's forward, with ``images`` of the batch (an index) zeroed
    where ``when`` (an expression, which may read ``threads.budget()``) holds."""
    source = f"""
        from kernels import threads
        from kernels.backend_im2col import convolve as right
        def convolve(inputs, kernels, padding):
            result = right(inputs, kernels, padding)
            if {when}:
                result[{images}] = 0
            return result
    """
    _add_backend(tmp_path, monkeypatch, name, source)
    monkeypatch.delitem(sys.modules, f"kernels.backend_{name}", raising=False)


def test_a_backend_wrong_only_on_large_batches_is_caught_on_the_exact_shapes(tmp_path, monkeypatch):
    """The small check case has a batch of 2; this backend is right there and wrong beyond."""
    _add_wrong_im2col(tmp_path, monkeypatch, "bigwrong", "2:")
    big = ConvCase((4, 3, 9, 9), (5, 3, 3, 3), 1)
    chosen = auto.plan("forward", big.input_shape, big.kernel_shape, 1)
    assert "bigwrong" in chosen.failed and chosen.backend != "bigwrong"


def test_a_backend_wrong_only_on_more_threads_is_caught_at_that_budget(tmp_path, monkeypatch):
    """A verdict holds for the thread budget it was reached at: the budget decides how a call
    is cut, so a backend right on one thread is verified again on two."""
    _add_wrong_im2col(tmp_path, monkeypatch, "wrongontwo", "0", when="threads.budget() > 1")
    from kernels import threads

    one = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert "wrongontwo" not in one.failed
    monkeypatch.setattr(threads, "budget", lambda: 2)
    two = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert two.key != one.key and "wrongontwo" in two.failed and two.backend != "wrongontwo"


def test_the_cache_is_reused_by_a_new_process(private_cache):
    probe = textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("error")
        import nnbench
        import numpy as np
        import kernels
        from nnbench import auto
        from nnbench.machine import pinned_threads
        auto.TRIAL_SECONDS = 0.0
        x, k = np.ones({CASE.input_shape}, np.float32), np.ones({CASE.kernel_shape}, np.float32)
        with pinned_threads(1):
            source = auto.plan("forward", x.shape, k.shape, 1).source
            auto.settle(lambda: kernels.convolve(x, k, 1, backend="auto"))
            print(source)
    """)
    env = {**os.environ, auto.CACHE_ENV: str(private_cache)}
    runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           cwd=ROOT, env=env, check=True).stdout.split() for _ in range(2)]  # fmt: skip
    assert runs == [["measured"], ["cache"]]


@pytest.fixture
def wrong_fast_backend(tmp_path, monkeypatch):
    """A backend that answers at once, and wrongly (zeros): found like any backend file."""
    (tmp_path / "backend_fastwrong.py").write_text(
        textwrap.dedent("""
        import numpy as np
        def convolve(inputs, kernels, padding):
            n, _, h, w = inputs.shape
            c, _, kh, kw = kernels.shape
            return np.zeros((n, c, h - kh + 1 + 2 * padding, w - kw + 1 + 2 * padding),
                            inputs.dtype)
    """)
    )
    importlib.invalidate_caches()
    monkeypatch.setattr(kernels, "__path__", [*kernels.__path__, str(tmp_path)])
    found, _ = kernels._registry.discover()
    monkeypatch.setattr(kernels, "_BACKENDS", found)
    yield
    sys.modules.pop("kernels.backend_fastwrong", None)


def test_auto_never_picks_a_backend_that_fails_verification(wrong_fast_backend):
    chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert "fastwrong" in chosen.failed and "FAILED" in chosen.failed["fastwrong"]
    assert chosen.backend != "fastwrong" and "fastwrong" not in chosen.seconds


@pytest.mark.parametrize(
    "change", [{"backend": "fastwrong"}, {"settled": False}], ids=["now-fails", "not-settled"]
)
def test_a_cached_choice_that_now_fails_or_never_settled_is_planned_again(
    private_cache, wrong_fast_backend, monkeypatch, change
):
    settled = _settled_plan(monkeypatch)
    saved, plans = _saved(private_cache)
    plans[settled.key].update(change)
    private_cache.write_text(json.dumps(saved))
    auto.forget()
    chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert chosen.backend != "fastwrong" and chosen.source == "measured"


def test_a_cached_finalist_that_now_fails_is_not_tried_again(
    private_cache, wrong_fast_backend, monkeypatch
):
    settled = _settled_plan(monkeypatch)
    saved, plans = _saved(private_cache)
    plans[settled.key]["finalists"] = [settled.backend, "fastwrong", "gone", 7, [1]]
    private_cache.write_text(json.dumps(saved))
    auto.forget()
    chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert (chosen.source, chosen.backend) == ("cache", settled.backend)
    assert chosen.finalists == (settled.backend,) and chosen.settled and auto.pending() == []
    assert set(chosen.failed) == {"fastwrong", "gone"} and "FAILED" in chosen.failed["fastwrong"]
    assert chosen.failed["gone"] == "not available"
    rewritten = _saved(private_cache)[1][settled.key]
    assert rewritten["finalists"] == [settled.backend] and set(rewritten["failed"]) == {
        "fastwrong", "gone"}  # fmt: skip


def test_conv2d_and_environment_variable_accept_auto(monkeypatch, rng):
    layer = Conv2D(4, 3, input_shape=(3, 8, 8), kernel="auto")
    layer.build(None)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert layer.forward(x).shape == (2, 4, 8, 8) and layer.backend.name == "auto"
    monkeypatch.setenv(kernels.ENV_VAR, "auto")
    assert kernels.resolve(None) is auto.BACKEND


def test_auto_needs_nnbench():
    probe = "import kernels\ntry:\n    kernels.get('auto')\nexcept ValueError as e:\n    print(e)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True)  # fmt: skip
    assert "provided by nnbench.auto" in run.stdout


def test_candidates_are_raced_and_the_finalists_timed_again(monkeypatch):
    """A scripted clock: ``time_call`` returns each call's next scripted time, so the race is
    decided by the script, not by the machine."""
    from nnbench import bench
    from nnbench.bench import runner

    order = []
    script = {
        "slow": iter([1.0, 1.0]),  # twice over GIVE_UP_FACTOR x the fastest first call: given up
        # a stall on its first call only, then under the factor but over CLOSE_FACTOR x: timed,
        # not a finalist
        "far": iter([1.0, 0.003] + [0.0028] * 100),
        "a": iter([0.002] * (1 + auto.REPEATS) + [0.0011] * 100),  # faster in the later rounds
        "b": iter([0.002] * (1 + auto.REPEATS) + [0.0019] * 100),
    }
    for module in (bench, runner):
        monkeypatch.setattr(module, "time_call", lambda fn: fn())

    def call(name):
        def run():
            order.append(name)
            return next(script[name])

        return run

    calls = {name: call(name) for name in script}
    seconds, finalists = auto._race(calls)
    assert seconds["slow"] is None and finalists == ["a", "b"]
    assert order[:4] == ["slow", "far", "a", "b"]  # the first call of each screens
    assert order[4:6] == ["slow", "far"]  # a second call of each over the factor: one more try
    rounds = order[6 : 6 + 3 * auto.REPEATS]
    assert all(sorted(rounds[i : i + 3]) == ["a", "b", "far"] for i in range(0, len(rounds), 3))
    again = order[6 + 3 * auto.REPEATS :]
    per_round = 0.002 + 0.002  # the finalists' medians after the first REPEATS rounds
    expected = min(auto.MAX_REPEATS - auto.REPEATS, math.ceil(auto.TIMING_SECONDS / per_round))
    assert again.count("a") == again.count("b") == max(auto.REPEATS, expected)
    assert "far" not in again and seconds["far"] == pytest.approx(0.0028)
    # the finalists' medians pool both phases: a's later rounds are faster, and a now wins
    assert seconds["a"] == pytest.approx(0.0011) and seconds["b"] == pytest.approx(0.0019)
    order.clear()  # one candidate: its first call and REPEATS rounds, no more
    assert auto.time_candidates({"b": call("b")}) == {"b": pytest.approx(0.0019)}
    assert order == ["b"] * (1 + auto.REPEATS)
