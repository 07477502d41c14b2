"""``backend="auto"``: the fastest verified backend for each call, chosen by measuring.

``kernels.convolve(..., backend="auto")`` (and ``grad_inputs``, ``grad_kernels``,
``Conv2D(kernel="auto")``, ``Model(kernel="auto")``, ``NNBENCH_KERNEL=auto``, ``python -m
nnbench.accuracy --kernel auto``) runs, for each (pass, shapes, padding, dtype, threads), the
backend that ``plan`` chose for that key:

1. the candidates are the available backends whose ``supports`` accepts the case;
2. each candidate is checked against the float64 reference through the verification core
   (``nnbench.verify``: same operands, tolerance table and compare as the tests), first on a
   small case of the same kernel, padding, channels and dtype, then on the exact shapes (the
   batch splitting, chunking and layout choices of the real call); one that fails is never
   chosen;
3. the verified candidates are timed on those operands, under the thread limits in force, in
   interleaved rounds (``time_candidates``: each once per round, in a new random order each
   round, so that all see the same machine state); those within ``CLOSE_FACTOR`` of the
   fastest after ``REPEATS`` rounds are timed in more rounds, and the smallest of their
   medians wins. One whose first call is ``GIVE_UP_FACTOR`` times slower than the fastest
   first call, and its second call too, is not timed further (its time is None);
4. that race lasts a fraction of a second, and a machine's state can change within seconds (on
   a 2-core VM torch ran at 2.2x its usual time for stretches of a fraction of a second, and
   a plan made in one kept the wrong backend for good). So the plan goes on trial where the
   race left more than one candidate within ``TRIAL_FACTOR`` of its choice's median (wide
   enough to keep a backend the race caught in such a state): the key's real calls, from the
   one that planned, go to those ``finalists`` in turn, in a new random order each turn, and
   are timed (their results are used as any call's), until each has ``TRIAL_CALLS`` of them
   and ``TRIAL_SECONDS`` have passed since the first. The finalist with the smallest median
   over its calls in use is then kept (``settled``). A finalist that raises is dropped from
   the trial (the call raises).

Later calls with the same key reuse the settled choice (a dictionary lookup per call). Settled
choices persist in a small JSON file in the user cache folder (``cache_path``;
``$NNBENCH_AUTO_CACHE`` overrides it), written atomically when the plan settles (a plan still on
trial when the process ends is made again in the next). The file holds one entry of plans per
machine and library versions, so that a cache folder shared by several machines (a cluster's
nodes, a workstation and a server) keeps the plans of each: a process uses its machine's entry
(a machine not in the file yet times everything, without a warning), and writes that entry only,
last, keeping the others; the file keeps the ``CACHE_MACHINES`` entries written last. The
default file is one per schema (``auto-plans-5.json``), so versions of nnbench that plan
differently keep separate files; a cache that is corrupt or of another schema (a file named in
``$NNBENCH_AUTO_CACHE`` that two versions share) is ignored whole with a warning, and replaced
at the next write. A cached choice is verified again in each process before it is used, and where the race
had left it finalists, those of them that still pass verification go on trial with it again on
the key's first calls (the race is not run again): a choice settled in a busy moment of the
machine is put right in the next process, not kept for good. The key is the pass, the case
(shapes, padding, dtype) and the thread budget (``kernels.threads.budget()``, which
``nnbench.machine.pinned_threads`` sets for torch too). ``plan(...)`` shows what auto would use
and the times behind it; ``settle(fn)`` calls ``fn`` until the trials of the keys it uses are
over (a warm-up).

``auto`` lives in nnbench (it uses the verification core) and registers itself with
``kernels`` when nnbench is imported; ``kernels`` alone does not offer it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import random
import statistics
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np

import kernels
from kernels import threads
from nnbench._io import atomic_write_json
from nnbench.verify import PASSES, ConvCase, Verdict, check_backend, operands

__all__ = [
    "CACHE_ENV",
    "CACHE_MACHINES",
    "CLOSE_FACTOR",
    "MAX_REPEATS",
    "NAME",
    "REPEATS",
    "TIMING_SECONDS",
    "TRIAL_CALLS",
    "TRIAL_FACTOR",
    "TRIAL_SECONDS",
    "Plan",
    "cache_path",
    "forget",
    "pending",
    "plan",
    "settle",
    "time_candidates",
]

NAME = "auto"
CACHE_ENV = "NNBENCH_AUTO_CACHE"
SCHEMA = "nnbench.auto/5"  # 2: medians of interleaved rounds; 3: close ones timed again; 4: trial;
# 5: several machines per file
#: Machines (fingerprints) whose plans the cache file keeps: the entries written last.
CACHE_MACHINES = 8
#: Interleaved rounds of every candidate; at most MAX_REPEATS for the close ones.
REPEATS, MAX_REPEATS = 5, 60
#: Candidates whose median after REPEATS rounds is within this factor of the smallest are
#: timed again, in rounds that take about TIMING_SECONDS in all (at least REPEATS of them).
CLOSE_FACTOR, TIMING_SECONDS = 1.3, 0.25
#: A candidate whose first call, and then its second, is this many times slower than the fastest
#: first call is not timed further.
GIVE_UP_FACTOR = 4.0
#: The candidates whose race median is within this factor of the race's choice go on trial.
TRIAL_FACTOR = 2.5
#: The finalists' real calls, each, and the seconds since the trial's first call, before a plan
#: is settled.
TRIAL_CALLS, TRIAL_SECONDS = 8, 1.0
#: Largest image side of the small case a candidate is verified on.
CHECK_SIDE = 10

_lock = threading.RLock()
_plans: dict[str, Plan] = {}
_fast: dict[tuple, kernels.Backend] = {}  # (pass, shapes, padding, dtype, budget) -> backend
_supported: dict[tuple, str | None] = {}
_verdicts: dict[tuple[str, str, str, int], object] = {}
_loaded: dict[str, object] = {}
_trials: dict[str, _Trial] = {}  # plan key -> the trial of its finalists in use
_clock = time.perf_counter  # of the trial (the tests script it)


@dataclass(frozen=True)
class Plan:
    """What auto runs for one key: ``backend`` and the median seconds of every candidate timed
    in the race (None: its first two calls took over ``GIVE_UP_FACTOR`` times the fastest
    first call, so it was not timed further). ``failed`` maps backends that failed verification to
    why; ``source`` says whether the choice was measured now or cached.

    ``race`` is the race's choice and ``finalists`` the candidates within ``TRIAL_FACTOR`` of
    its median. While ``settled`` is False they take turns on the key's calls, and ``backend``
    is the race's choice (for a plan from the cache, the cached choice), not what the calls
    run. ``trial`` is the median seconds of each finalist over its calls in use (once
    settled; None before, or when there was one finalist). A plan cached before ``race`` was
    kept has None there."""

    key: str
    backend: str
    seconds: dict[str, float | None]
    failed: dict[str, str] = field(default_factory=dict)
    source: str = "measured"
    finalists: tuple[str, ...] = ()
    trial: dict[str, float] | None = None
    settled: bool = True
    race: str | None = None

    def as_dict(self) -> dict:
        return {"backend": self.backend, "seconds": self.seconds, "failed": self.failed,
                "finalists": list(self.finalists), "trial": self.trial,
                "settled": self.settled, "race": self.race}  # fmt: skip


def cache_path() -> Path:
    """The JSON file of persisted choices: ``$NNBENCH_AUTO_CACHE``, else a file of this
    ``SCHEMA``'s own in the user cache (``auto-plans-5.json``), so that two versions of nnbench
    sharing a home folder keep their plans apart instead of replacing each other's."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    version = SCHEMA.rsplit("/", 1)[1]
    return Path(platformdirs.user_cache_dir("nnbench")) / f"auto-plans-{version}.json"


def forget() -> None:
    """Drop the choices and verdicts held in this process (the cache file stays)."""
    with _lock:
        _plans.clear()
        _trials.clear()
        _fast.clear()
        _supported.clear()
        _verdicts.clear()
        _loaded.clear()


def _fingerprint() -> dict:
    """What a cached choice is only valid for: this machine and these libraries (computed once
    per process: a settling call persists its plan)."""
    if "fingerprint" not in _loaded:
        _loaded["fingerprint"] = _describe_machine()
    return _loaded["fingerprint"]


def _describe_machine() -> dict:
    from threadpoolctl import threadpool_info

    from nnbench.machine import cpu_model

    versions = {}
    for name in ("nnbench", "numpy", "scipy", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    # numpy's own BLAS (in numpy.libs/ beside the package, for the wheels), not whichever
    # others are loaded by now (scipy's comes with the fft backend)
    blas = sorted(
        f"{pool.get('internal_api')} {pool.get('version')} {pool.get('architecture')}"
        for pool in threadpool_info()
        if pool.get("user_api") == "blas"
        and Path(str(pool.get("filepath", ""))).parent.name.startswith("numpy")
    )
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),  # the machine's, not this process's affinity
        "machine": platform.machine(),
        "versions": versions,
        "blas": blas,
    }


def key_for(pass_: str, input_shape, kernel_shape, padding: int, dtype) -> str:
    """``forward k3p1[128,16,16,16]->32-float32 t2``: pass, case id and thread budget."""
    case = ConvCase(input_shape, kernel_shape, padding, np.dtype(dtype).name)
    return f"{pass_} {case.id} t{threads.budget()}"


def _cached() -> dict:
    """This machine's persisted choices (read once): the plans of the cache file's entry for
    ``_fingerprint()``. {} where the file has no such entry (a machine new to a shared file:
    nothing to say), and {} with a warning where the file is unusable."""
    if "plans" not in _loaded:
        _loaded["plans"] = _plans_of(_machines())
    return _loaded["plans"]


def _plans_of(machines: list[dict]) -> dict:
    """The plans of this machine's entry among ``machines``, or {} (the last entry if several:
    the one written last)."""
    mine = [entry for entry in machines if entry["machine"] == _fingerprint()]
    return mine[-1]["plans"] if mine else {}


def _machines() -> list[dict]:
    """The entries of the cache file (``{"machine": fingerprint, "plans": {...}}``), oldest
    written first; [] where there is no file, and [] with a warning where it is unusable (not
    JSON, of another schema, or of this schema with a malformed structure): it is ignored
    whole, not trusted in part."""
    path = cache_path()
    if not path.exists():
        return []
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        schema = payload.get("schema") if isinstance(payload, dict) else None
        if isinstance(schema, str) and schema.startswith("nnbench.auto/") and schema != SCHEMA:
            warnings.warn(
                f"ignoring the auto-plan cache {path}: its plans were made the way schema "
                f"{schema!r} says, not {SCHEMA!r}; backends will be timed again",
                RuntimeWarning,
                stacklevel=3,
            )
            return []
        if schema != SCHEMA:
            raise ValueError(f"schema is not {SCHEMA!r}")
        malformed = _malformed(payload.get("machines"))
        if malformed:
            raise ValueError(malformed)
        return payload["machines"]
    except (OSError, ValueError) as exc:
        warnings.warn(
            f"ignoring the auto-plan cache {path}: it is not a valid cache ({exc}); "
            "backends will be timed again",
            RuntimeWarning,
            stacklevel=3,
        )
        return []


def _malformed(machines: object) -> str | None:
    """What is wrong with ``machines``, the file's list of entries, or None."""
    if not isinstance(machines, list):
        return "'machines' is not a list"
    for entry in machines:
        if not isinstance(entry, dict):
            return "an entry of 'machines' is not an object"
        if not isinstance(entry.get("machine"), dict):
            return "the 'machine' of an entry is not an object"
        if not isinstance(entry.get("plans"), dict):
            return "the 'plans' of an entry is not an object"
    return None


def _persist(key: str, chosen: Plan) -> None:
    """Add the choice to this machine's entry of the cache file, merged with what the file holds
    now (another process, on this machine or another sharing the file, may have written since
    this one read it). The other machines' entries are kept as they are; this machine's goes
    last, and the entries before the last ``CACHE_MACHINES`` (those written longest ago) are
    dropped. A file that is unusable is replaced by one of this machine's entry only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this process has already said so if it is unusable
        machines = _machines()
    plans = {**_plans_of(machines), key: chosen.as_dict()}
    _loaded["plans"] = plans
    mine = {"machine": _fingerprint(), "plans": plans}
    others = [entry for entry in machines if entry["machine"] != mine["machine"]]
    kept = [*others, mine][-CACHE_MACHINES:]
    try:
        atomic_write_json(cache_path(), {"schema": SCHEMA, "machines": kept})
    except OSError as exc:  # a read-only cache folder costs a re-timing, nothing else
        warnings.warn(f"could not save the auto-plan cache: {exc}", RuntimeWarning, stacklevel=2)


def _check_case(case: ConvCase) -> ConvCase:
    """A small case of the same kernel, padding, channels and dtype (fast to verify)."""
    n, d, h, w = case.input_shape
    _, _, kh, kw = case.kernel_shape
    p = case.padding
    side_h = max(min(h, CHECK_SIDE), kh - 2 * p, 1)
    side_w = max(min(w, CHECK_SIDE), kw - 2 * p, 1)
    return ConvCase((min(n, 2), d, side_h, side_w), case.kernel_shape, p, case.dtype)


def _verify(backend: str, pass_: str, case: ConvCase) -> Verdict:
    """``backend``'s verdict on ``pass_`` of ``case`` (cached per process, case and thread
    budget: the budget decides how a call is cut, and so what runs)."""
    key = (backend, pass_, case.id, threads.budget())
    if key not in _verdicts:
        _verdicts[key] = check_backend(backend, case, pass_)
    return _verdicts[key]


def _verified(backend: str, pass_: str, case: ConvCase) -> Verdict:
    """The small case first (cheap, and catches most mistakes), then the exact shapes."""
    small = _verify(backend, pass_, _check_case(case))
    return _verify(backend, pass_, case) if small.passed else small


def plan(pass_: str, input_shape, kernel_shape, padding: int, dtype="float32") -> Plan:
    """The backend auto runs for this call, and the times behind the choice (measured on first
    use of the key, then reused). While the plan is on trial (``settled`` False), ``backend`` is
    the race's choice (or the cached one) and the calls go to its ``finalists`` in turn.
    ``ValueError`` if no backend supports the case or none passes verification."""
    if pass_ not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")
    key = key_for(pass_, input_shape, kernel_shape, padding, dtype)
    with _lock:
        if key in _plans:
            return _plans[key]
        case = ConvCase(input_shape, kernel_shape, padding, np.dtype(dtype).name)
        stored = _cached().get(key)
        if (
            isinstance(stored, dict)
            and stored.get("settled") is True
            and isinstance(stored.get("backend"), str)
        ):
            name = stored["backend"]
            if _unusable(name, pass_, case) is None:
                _plans[key] = _from_cache(key, name, stored, pass_, case)
                return _plans[key]
        _plans[key] = _measure(key, pass_, case)
        if _plans[key].settled:
            _persist(key, _plans[key])
        return _plans[key]


def _unusable(name: str, pass_: str, case: ConvCase) -> str | None:
    """Why ``name`` cannot run ``case`` now (not available, unsupported, failed verification),
    or None."""
    if name not in kernels.available():
        return "not available"
    reason = case.unsupported_by(name)
    if reason:
        return reason
    verdict = _verified(name, pass_, case)
    return None if verdict.passed else verdict.message()


def _from_cache(key: str, name: str, stored: dict, pass_: str, case: ConvCase) -> Plan:
    """The cached choice ``name`` (verified) as a plan of this process: on trial again among
    those of its cached finalists that can still run the case, as a plan just raced is, so that
    a choice made in a busy moment of the machine is not kept for good; settled at once where
    it is the only one. The race's times and choice are kept from the cache; a finalist left
    out goes to ``failed`` with the reason, and the cache says so once the plan settles."""
    seconds = stored.get("seconds") if isinstance(stored.get("seconds"), dict) else {}
    listed = stored.get("finalists") if isinstance(stored.get("finalists"), list) else []
    cached = [other for other in listed if isinstance(other, str)]
    finalists, failed = [], {}
    for other in dict.fromkeys(cached if name in cached else [name, *cached]):
        why = None if other == name else _unusable(other, pass_, case)
        if why is None:
            finalists.append(other)
        else:
            failed[other] = why
    planned = Plan(
        key=key,
        backend=name,
        seconds=seconds,
        failed=failed,
        source="cache",
        finalists=tuple(finalists),
        settled=len(finalists) == 1,
        race=stored.get("race") if isinstance(stored.get("race"), str) else None,
    )
    if planned.settled and failed:
        _persist(key, planned)
    return planned


def _measure(key: str, pass_: str, case: ConvCase) -> Plan:
    candidates = [name for name in kernels.available() if not case.unsupported_by(name)]
    if not candidates:
        raise ValueError(f"no backend supports {case.id}")
    failed = {}
    for name in candidates:
        verdict = _verified(name, pass_, case)
        if not verdict.passed:
            failed[name] = verdict.message()
    verified = [name for name in candidates if name not in failed]
    if not verified:
        raise ValueError(
            f"auto: no backend passed verification for {pass_} {case.id}: "
            + "; ".join(f"{name}: {why}" for name, why in failed.items())
        )
    arguments = operands(case).arguments(pass_)
    calls = {
        name: functools.partial(
            getattr(kernels.get(name), "convolve" if pass_ == "forward" else pass_),
            *arguments,
            case.padding,
        )
        for name in verified
    }
    seconds, close = _race(calls)
    chosen = min(close, key=seconds.get)
    limit = TRIAL_FACTOR * seconds[chosen]
    finalists = tuple(
        name for name, taken in seconds.items() if taken is not None and taken <= limit
    )
    return Plan(
        key, chosen, seconds, failed, finalists=finalists, settled=len(finalists) == 1, race=chosen
    )


def pending() -> list[str]:
    """The keys whose plan is still on trial (``Plan.settled`` is False)."""
    with _lock:
        return [key for key, chosen in _plans.items() if not chosen.settled]


def settle(fn: Callable[[], object], limit_s: float = 120.0) -> int:
    """Call ``fn`` (a step, a benchmark's call) until the plans on trial that its calls use are
    settled; the number of calls made. It stops at the first call that runs no trial, so ``fn``
    must use its keys on every call. ``RuntimeError`` after ``limit_s`` seconds."""
    start, made = time.perf_counter(), 0
    while True:
        before = _trial_calls()
        fn()
        made += 1
        after = _trial_calls()
        if all(before.get(key) == count for key, count in after.items()):
            return made  # none of fn's calls went to a trial (any it used is settled now)
        if time.perf_counter() - start > limit_s:
            raise RuntimeError(
                f"auto: plans still on trial after {made} calls in {limit_s:g} s: "
                + ", ".join(key for key in after if before.get(key) != after[key])
            )


def _trial_calls() -> dict[str, int]:
    with _lock:
        return {key: sum(map(len, trial.times.values())) for key, trial in _trials.items()}


class _Trial:
    """The finalists of one plan taking turns on its calls, each call timed."""

    def __init__(self, planned: Plan):
        self.plan = planned
        self.started = _clock()  # at the trial's first call
        self.times: dict[str, list[float]] = {name: [] for name in planned.finalists}
        self.turn: list[str] = []
        self.order = random.Random(planned.key)  # a new order each turn, the same every run

    def next(self) -> str:
        if not self.turn:
            self.turn = list(self.times)
            self.order.shuffle(self.turn)
        return self.turn.pop()

    def record(self, name: str, seconds: float) -> Plan | None:
        """Add one call's time; the settled plan once the trial is over, else None."""
        self.times[name].append(seconds)
        enough = min(map(len, self.times.values())) >= TRIAL_CALLS
        if not enough or _clock() - self.started < TRIAL_SECONDS:
            return None
        return self._settled()

    def drop(self, name: str) -> Plan | None:
        """Take a finalist that raised out of the trial; the settled plan if one is left."""
        self.times.pop(name, None)
        self.turn = [other for other in self.turn if other != name]
        return self._settled() if len(self.times) == 1 else None

    def _settled(self) -> Plan:
        medians = {name: statistics.median(t) for name, t in self.times.items() if t}
        chosen = min(medians, key=medians.get) if medians else next(iter(self.times))
        return replace(self.plan, backend=chosen, trial=medians or None, settled=True)


def _on_trial(planned: Plan, pass_: str, a: np.ndarray, b: np.ndarray, padding: int):
    """One call of a plan on trial: the next finalist's, timed; settles the plan at the end."""
    key = planned.key
    with _lock:
        current = _plans.get(key, planned)  # another thread may have settled or forgotten it
        trial = _trials.get(key)
        if current.settled:
            trial, name = None, current.backend
        else:
            if trial is None or trial.plan is not current:
                trial = _trials[key] = _Trial(current)
            name = trial.next()
    chosen = kernels.get(name)
    method = chosen.convolve if pass_ == "forward" else getattr(chosen, pass_)
    if trial is None:
        return method(a, b, padding)
    start = _clock()
    try:
        result = method(a, b, padding)
    except Exception:
        with _lock:
            if _trials.get(key) is trial:
                _end_trial(key, trial.drop(name))
        raise
    taken = _clock() - start
    with _lock:
        if _trials.get(key) is trial:
            _end_trial(key, trial.record(name, taken))
    return result


def _end_trial(key: str, settled: Plan | None) -> None:
    """With the lock held: put a settled plan in force, and persist it."""
    if settled is not None:
        del _trials[key]
        _plans[key] = settled
        _persist(key, settled)


def time_candidates(calls: dict[str, Callable[[], object]]) -> dict[str, float | None]:
    """The median seconds of each call, or None for one not timed to the end.

    1. One call of each screens (and warms up): one that took over ``GIVE_UP_FACTOR`` times
       the fastest first call is called once more, and not timed further if that call took
       over it too. One call alone can be a stall of the machine, not the backend: on a 2-core
       VM, screening a 1-image input gradient (calls of 0.3 to 1 ms) 40 times in a row gave up
       on im2col in 12 and on loop in 15 of them, on one call of up to 20 and 120 times the
       fastest; in a benchmark run such a screen gave up on torch, the fastest backend of that
       key, and auto ran it at 1.9x torch's time.
    2. The rest are timed in ``REPEATS`` interleaved rounds (``nnbench.bench.interleaved``:
       each once per round, in a new random order each round, so that all see the same
       machine state).
    3. Those whose median is within ``CLOSE_FACTOR`` of the smallest (the finalists), if more
       than one, are timed in more rounds, as many as fill about ``TIMING_SECONDS`` (at least
       ``REPEATS``, at most ``MAX_REPEATS`` in all): the time goes to the choice that noise
       could decide. Their medians are over all their rounds; the others keep those of step 2.

    auto chooses the finalist with the smallest median: the others' medians come from other
    rounds, so they are shown but not compared with the finalists'.
    """
    return _race(calls)[0]


def _race(calls: dict[str, Callable[[], object]]) -> tuple[dict[str, float | None], list[str]]:
    """``time_candidates``'s medians and its finalists."""
    from nnbench.bench import interleaved, time_call

    first = {name: time_call(call) for name, call in calls.items()}
    best = min(first.values())
    for name, taken in first.items():
        if taken > GIVE_UP_FACTOR * best:  # confirmed by a second call before giving up
            first[name] = min(taken, time_call(calls[name]))
    alive = [name for name, taken in first.items() if taken <= GIVE_UP_FACTOR * best]
    rounds = interleaved(*(calls[name] for name in alive), rounds=REPEATS, warm_up=False)
    times = dict(zip(alive, rounds))
    medians = {name: statistics.median(times[name]) for name in alive}
    fastest = min(medians.values())
    finalists = [name for name in alive if medians[name] <= CLOSE_FACTOR * fastest]
    if len(finalists) > 1:
        per_round = sum(medians[name] for name in finalists)
        more = max(REPEATS, math.ceil(TIMING_SECONDS / max(per_round, 1e-9)))
        more = min(MAX_REPEATS - REPEATS, more)
        again = interleaved(*(calls[n] for n in finalists), rounds=more, warm_up=False, seed=1)
        for name, extra in zip(finalists, again):
            medians[name] = statistics.median(times[name] + extra)
    return {name: medians.get(name) for name in calls}, finalists


def _dispatch(pass_: str):
    """The ``pass_`` function of the auto backend: the planned backend's, looked up per call by
    (shapes, padding, dtype, budget); planning happens on the first call of a key, and the
    trial on its calls from that one until the plan is settled."""

    def call(a: np.ndarray, b: np.ndarray, padding: int) -> np.ndarray:
        fast = (pass_, a.shape, b.shape, padding, a.dtype.str, threads.budget())
        chosen = _fast.get(fast)
        if chosen is None:
            x_shape, k_shape = _case_shapes(pass_, a.shape, b.shape, padding)
            planned = plan(pass_, x_shape, k_shape, padding, a.dtype)
            if not planned.settled:
                return _on_trial(planned, pass_, a, b, padding)
            chosen = kernels.get(planned.backend)
            _fast[fast] = chosen
        method = chosen.convolve if pass_ == "forward" else getattr(chosen, pass_)
        return method(a, b, padding)  # already validated by the front door

    return call


def _case_shapes(pass_: str, a_shape, b_shape, padding: int):
    """(input shape, kernel shape) of the convolution whose ``pass_`` takes arrays of shapes
    ``a_shape`` and ``b_shape``."""
    if pass_ == "forward":
        return a_shape, b_shape
    if pass_ == "grad_inputs":
        n, _, oh, ow = a_shape
        _, d, kh, kw = b_shape
        return (n, d, oh + kh - 1 - 2 * padding, ow + kw - 1 - 2 * padding), b_shape
    n, d, h, w = a_shape
    _, c, oh, ow = b_shape
    return a_shape, (c, d, h - oh + 1 + 2 * padding, w - ow + 1 + 2 * padding)


def _supports(input_shape, kernel_shape, padding, dtype) -> str | None:
    key = (tuple(input_shape), tuple(kernel_shape), padding, np.dtype(dtype).str)
    if key not in _supported:
        case = ConvCase(input_shape, kernel_shape, padding, np.dtype(dtype).name)
        ok = any(not case.unsupported_by(name) for name in kernels.available())
        _supported[key] = None if ok else "no available backend supports this case"
    return _supported[key]


BACKEND = kernels.Backend(
    name=NAME,
    convolve=_dispatch("forward"),
    grad_inputs=_dispatch("grad_inputs"),
    grad_kernels=_dispatch("grad_kernels"),
    supports=_supports,
    specialised_backward=True,
    exact=False,
    module=None,
)
