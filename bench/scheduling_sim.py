"""A deterministic discrete-event simulation of the device scheduler's policies (`slack`, `fifo`,
`free`) on simulated time: what each policy does with a mix of models at a given offered load,
without a server, in well under a second per run.

What is modelled, as `service/scheduler/device.py` and `service/batcher.py` do it:

- One queue per model (`DynamicBatcher`), one instance per model (so at most one of its batches
  computes at a time), `max_batch_size`, `max_queue_size` (a request arriving at a full queue is
  refused, under every policy). Every request is one item; its deadline is its arrival plus its
  model's `deadline_s`.
- A queued request whose deadline passes is removed and never computed (late: the batcher's
  deadline timer); a computed request that finishes after its deadline is late.
- `slack`: the server's rules, with the server's own code where it can be shared (`Plan`,
  `_least_slack`, `LatencyModel`) and the rest ported line for line (each port names the
  server function it mirrors): every queued request is due at its deadline less the time
  answers take after their batch (`post_compute_s`, zero here: so due = deadline), and every
  plan is costed at `LatencyModel.planned` (the prediction times its learnt margin; 1 here).
  Admission at the door (`DeviceScheduler.admit`): refused when the queue is full; or when,
  after the running batches' remaining predicted time and the queued work due no later than
  it (each request costed at `item_cost_s` of its model's pending items: `pending_work`), over
  the slots and stretched by the model's `AdmissionCalibration` (the server's own, told what
  became of every admitted request: answered on time, late, or dropped), its own cost overruns
  its due time; or when fitting it in would make an admitted
  request that is on time now late (the earliest-deadline-first walk over the work due after
  it). Early drop of what cannot be on time even alone once a slot frees (`drop_unreachable`),
  and the least-slack choice among each model's largest on-time batch (`plan`), up to `slots`
  batches at once.
- `fifo`: `slots` batches at once; when a slot frees, the model whose oldest queued request came
  first runs a FIFO batch of up to `max_batch_size` (`configured_batch`).
- `free`: every model dispatches a FIFO batch whenever its instance is free. The device runs
  `slots` batches at full speed; beyond that the running batches share it (processor sharing:
  with n running each progresses at `min(1, slots / n)`), so oversubscription slows everyone,
  as on a CPU whose cores every model's threads compete for.
- A batch of b items truly takes the model's table time `LatencyModel(max_batch_size,
  latency_s).predict(b)` times its `true_scale` times `1 + noise·N(0, 1)` (clipped at 0.5, from
  a seeded generator); the scheduler plans with the same `LatencyModel` without noise or scale.

What is not modelled: HTTP, decoding and encoding (the CPU work of the event loop and the
workers, which on a real CPU competes with the batches; so the door's allowance for the time
from the door to the queue, `pre_queue_s`, and the time from a batch's end to its answers,
`post_compute_s`, are zero here, no request is ever on its way to the queue, and the re-check
before decoding, `reachable`, would repeat the admission at the same instant), the online
refit of the latency models (their predictions here never learn from the runs, and their
planning margin stays 1), the scheduler's own decision time, several instances of one model,
multi-item requests, `max_queue_delay`, preferred batch sizes, and clients retrying refused
requests (the load is open loop: arrivals do not depend on answers).

The arrivals are those of `bench.scheduling_load` (the live `bench scheduling` load), so a seed
gives the same arrival process in simulation and against a server. The event loop steps from
one event to the next: the next arrival (presorted), the next completion (computed from each
running batch's remaining work at the current sharing rate, so it is always current however
often the number of running batches changes) and the next deadline expiry (each queue's head:
within a model, deadlines come in arrival order, so every removal cuts the queue's head).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

import numpy as np

from easerve.bench.scheduling_load import arrival_times
from easerve.service.scheduler.calibration import MAX_FACTOR, AdmissionCalibration
from easerve.service.scheduler.device import POLICIES, Plan, Schedulable, _least_slack
from easerve.service.scheduler.latency import LatencyModel, profile_sizes
from easerve.service.settings import SchedulerPolicy as Policy

Pattern = Literal["poisson", "bursty"]
PATTERNS: tuple[Pattern, ...] = get_args(Pattern)
NOISE_FLOOR = 0.5  # the smallest factor noise may scale a run time by
# A running batch with at most this many seconds of work left has finished (rounding).
_FINISHED_S = 1e-12


@dataclass(frozen=True)
class SimModel:
    """One model of the simulated mix. `latency_s` is its latency table (measured seconds by
    batch size, as `LatencyModel` profiles it); `share` its relative weight in the offered load
    (the shares of a mix are normalised to sum to one); `true_scale` how much longer its batches
    really take than the table says (the scheduler still predicts the table)."""

    name: str
    latency_s: dict[int, float]
    max_batch_size: int
    share: float
    deadline_s: float
    priority: int = 0
    max_queue_size: int = 256
    true_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.latency_s or any(size < 1 or seconds <= 0 for size, seconds in self.latency_s.items()):
            raise ValueError(f"{self.name}: the latency table needs positive seconds at batch sizes >= 1")
        if self.max_batch_size < 1 or self.max_queue_size < 1:
            raise ValueError(f"{self.name}: max_batch_size and max_queue_size must be at least 1")
        if self.share < 0 or self.deadline_s <= 0 or self.true_scale <= 0:
            raise ValueError(f"{self.name}: share must be >= 0, deadline_s and true_scale > 0")

    def latency_model(self) -> LatencyModel:
        """The scheduler's latency model of this model: its table, never refitted."""
        return LatencyModel(self.max_batch_size, self.latency_s)


@dataclass(frozen=True)
class SimResult:
    """One simulated run. Per model: requests `sent` (every arrival) = `good` (computed by the
    deadline) + `late` (computed after it, or expired in the queue) + `dropped` (under `slack`:
    found unable to be on time and never computed) + `refused` (at the door: a full queue, or
    under `slack` no time left by the work due before it, or admitted work it would make late).
    `latencies_s`: arrival to completion of every computed request, late ones included.
    `busy_s`: slot-seconds the device spent computing (with processor sharing, at most `slots`
    per second however many batches run)."""

    policy: Policy
    pattern: str
    offered_rps: float
    duration_s: float
    sent: dict[str, int]
    good: dict[str, int]
    late: dict[str, int]
    dropped: dict[str, int]
    refused: dict[str, int]
    latencies_s: dict[str, list[float]]
    batch_sizes: list[int]
    busy_s: float

    @property
    def goodput(self) -> float:
        """Good answers per simulated second, all models together."""
        return sum(self.good.values()) / self.duration_s

    @property
    def attainment(self) -> float:
        """Good answers over requests sent, all models together (1 when nothing was sent)."""
        sent = sum(self.sent.values())
        return sum(self.good.values()) / sent if sent else 1.0

    def attainment_of(self, model: str) -> float:
        """Good answers over requests sent for `model` (1 when none was sent)."""
        return self.good[model] / self.sent[model] if self.sent[model] else 1.0

    @property
    def worst_attainment(self) -> float:
        """The lowest attainment of a model that was sent requests (1 when none was)."""
        return min((self.attainment_of(model) for model, sent in self.sent.items() if sent), default=1.0)

    @property
    def p50_s(self) -> dict[str, float]:
        """Median latency of the computed requests, per model (nan for a model with none)."""
        return self._quantile(0.5)

    @property
    def p99_s(self) -> dict[str, float]:
        """99th percentile latency of the computed requests, per model (nan for a model with none)."""
        return self._quantile(0.99)

    def _quantile(self, quantile: float) -> dict[str, float]:
        return {
            model: float(np.quantile(values, quantile)) if values else math.nan
            for model, values in self.latencies_s.items()
        }


def arrivals(
    models: Sequence[SimModel], offered_rps: float, duration_s: float, pattern: Pattern, seed: int
) -> list[tuple[float, int]]:
    """(time, model index) of every request in [0, duration_s), in time order: per model a
    renewal process of rate `offered_rps × share / sum of shares` with exponential gaps
    (`poisson`) or gamma gaps of coefficient of variation 3 (`bursty`: shape 1/9, the same
    mean), drawn from `numpy.random.default_rng(seed)` one model after the other. The same
    seed gives the same arrivals (and the same as `bench scheduling`'s load for the same mix)."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown arrival pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    rng = np.random.default_rng(seed)
    total_share = sum(model.share for model in models)
    if total_share <= 0:
        return []
    events = [
        (float(moment), index)
        for index, model in enumerate(models)
        for moment in arrival_times(offered_rps * model.share / total_share, duration_s, pattern, rng)
    ]
    return sorted(events)


def capacity_rps(models: Sequence[SimModel]) -> float:
    """The request rate of the mix that keeps one slot exactly busy when every model runs full
    batches: 1 / Σ (share / total share) × L(max) / max, by the tables (`true_scale` is not
    counted: this is the capacity the scheduler believes in)."""
    total_share = sum(model.share for model in models)
    if total_share <= 0:
        raise ValueError("the mix has no share of the load")
    per_request_s = sum(
        model.share / total_share * model.latency_model().predict(model.max_batch_size) / model.max_batch_size
        for model in models
    )
    return 1.0 / per_request_s


def gpu_projection(table: dict[int, float], fixed_share: float = 0.9) -> dict[int, float]:
    """An assumed, GPU-like shape of a CPU latency table, for small models: a batch costs
    `L(1)` plus only `1 - fixed_share` of what the CPU table adds above batch 1,
    `L'(b) = L(1) + (L(b) - L(1)) × (1 - fixed_share)`, so larger batches are nearly free.
    This is a projection (what a device whose batch-1 time is mostly fixed overhead would look
    like), not a measurement of any GPU."""
    if 1 not in table:
        raise ValueError("the table needs the batch-1 time")
    if not 0.0 <= fixed_share <= 1.0:
        raise ValueError("fixed_share must be within [0, 1]")
    single = table[1]
    return {size: single + (seconds - single) * (1.0 - fixed_share) for size, seconds in table.items()}


def example_models() -> list[SimModel]:
    """Six illustrative models shaped like small CPU models (made-up linear tables, not
    measured): L(1) from 1.5 to 6 ms, L(32) 12 to 25 × L(1), shares 100/30/30/30/20/20,
    deadlines 15 to 25 × L(1) (37.5 to 100 ms). At half its capacity every policy answers at
    least 99 % of the mix on time; above it the policies part."""
    specs = [  # name, L(1) ms, L(32) / L(1), share, deadline / L(1)
        ("classifier", 1.5, 25, 100, 25),
        ("segmenter", 2.0, 25, 30, 25),
        ("detector", 3.0, 24, 30, 20),
        ("generator", 4.0, 20, 30, 20),
        ("points", 5.0, 16, 20, 20),
        ("points-sa", 6.0, 12, 20, 15),
    ]
    return [
        SimModel(name, linear_table(single_ms / 1000, ratio, 32), 32, share, deadline * single_ms / 1000)
        for name, single_ms, ratio, share, deadline in specs
    ]


def linear_table(single_s: float, ratio: float, max_batch_size: int) -> dict[int, float]:
    """A latency table at the sizes `LatencyModel` profiles (`profile_sizes`: the powers of two
    below `max_batch_size`, and it), rising linearly from `single_s` at batch 1 to
    `ratio × single_s` at `max_batch_size`."""
    if max_batch_size == 1:
        return {1: single_s}
    step = single_s * (ratio - 1) / (max_batch_size - 1)
    return {size: single_s + step * (size - 1) for size in profile_sizes(max_batch_size)}


def simulate(
    models: Sequence[SimModel],
    policy: Policy,
    offered_rps: float,
    duration_s: float,
    pattern: Pattern,
    seed: int = 0,
    slots: int = 1,
    noise: float = 0.0,
) -> SimResult:
    """Run `policy` on the arrivals of `models` at `offered_rps` for `duration_s` simulated
    seconds (then until everything admitted is answered). `slots`: batches the device runs at
    once at full speed (the scheduler's slots under `slack` and `fifo`; under `free`, beyond
    them the running batches share the device). Deterministic for a seed: the arrivals come
    from `seed`, the noise from a generator of its own seeded by it."""
    if offered_rps < 0:
        raise ValueError("offered_rps must be >= 0")
    requests = arrivals(models, offered_rps, duration_s, pattern, seed)
    return replay(
        models,
        policy,
        requests,
        duration_s,
        seed=seed,
        slots=slots,
        noise=noise,
        pattern=pattern,
        offered_rps=offered_rps,
    )


def replay(
    models: Sequence[SimModel],
    policy: Policy,
    requests: Sequence[tuple[float, int]],
    duration_s: float,
    *,
    seed: int = 0,
    slots: int = 1,
    noise: float = 0.0,
    pattern: str = "trace",
    offered_rps: float | None = None,
) -> SimResult:
    """Run `policy` on given arrivals: (time, model index) pairs in time order (`arrivals`, or
    a recorded trace), over `duration_s` (the goodput's denominator), until everything admitted
    is answered. `seed` seeds the noise only; `pattern` and `offered_rps` (default: the requests'
    count over `duration_s`) only label the result."""
    if policy not in POLICIES:
        raise ValueError(f"unknown scheduling policy {policy!r}; choose from {', '.join(POLICIES)}")
    if slots < 1 or noise < 0 or duration_s <= 0:
        raise ValueError("slots must be >= 1, noise >= 0 and duration_s > 0")
    if len({model.name for model in models}) != len(models):
        raise ValueError("the models' names must be distinct")
    if any(later[0] < earlier[0] for earlier, later in zip(requests, requests[1:])):
        raise ValueError("the requests must be in time order")
    simulation = _Simulation(list(models), policy, slots, noise, np.random.default_rng([seed, 1]))
    simulation.run(requests)
    rate = len(requests) / duration_s if offered_rps is None else offered_rps
    return simulation.result(pattern, rate, duration_s)


def sweep(
    models: Sequence[SimModel],
    policies: Iterable[Policy],
    loads: Iterable[float],
    capacity_rps: float,
    duration_s: float,
    patterns: Iterable[Pattern],
    seed: int = 0,
    *,
    slots: int = 1,
    noise: float = 0.0,
) -> list[SimResult]:
    """`simulate` every cell: for each pattern, each load (a multiple of `capacity_rps`), each
    policy, in that order, all on the same seed (so the policies see the same arrivals)."""
    policies, loads = list(policies), list(loads)
    return [
        simulate(models, policy, load * capacity_rps, duration_s, pattern, seed, slots, noise)
        for pattern in patterns
        for load in loads
        for policy in policies
    ]


def format_results(results: Iterable[SimResult]) -> str:
    """A plain-text table of runs: policy, pattern, offered load, goodput, attainment, worst
    model's attainment, mean batch size."""
    lines = [
        f"{'policy':<6} {'pattern':<8} {'offered/s':>10} {'goodput/s':>10} {'attain':>7} {'worst':>7} {'batch':>6}"
    ]
    for result in results:
        batch = float(np.mean(result.batch_sizes)) if result.batch_sizes else 0.0
        lines.append(
            f"{result.policy:<6} {result.pattern:<8} {result.offered_rps:>10.0f} {result.goodput:>10.0f} "
            f"{result.attainment:>7.3f} {result.worst_attainment:>7.3f} {batch:>6.1f}"
        )
    return "\n".join(lines)


# -- the simulation -----------------------------------------------------------------------------


@dataclass(eq=False)
class _Queue:
    """One model's batcher in the simulation (`DynamicBatcher`), with what the device scheduler
    asks of it (`Schedulable`), ported to a queue of one-item requests. Its requests, in
    arrival order, are `arrived[head:]` with `deadlines[head:]` and `dues[head:]` (both sorted
    too: one deadline_s per model, and one post_compute_s), so every removal cuts the head."""

    model: SimModel
    latency: LatencyModel
    priority: int
    calibration: AdmissionCalibration = field(default_factory=AdmissionCalibration)
    arrived: list[float] = field(default_factory=list)
    deadlines: list[float] = field(default_factory=list)
    dues: list[float] = field(default_factory=list)
    teaches: list[bool] = field(default_factory=list)  # what becomes of it teaches `calibration`
    head: int = 0
    busy: bool = False  # its one instance is computing a batch
    _planned: dict[int, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.deadlines) - self.head

    def planned(self, items: int) -> float:
        """`LatencyModel.planned`, memoised (the model is never refitted here)."""
        seconds = self._planned.get(items)
        if seconds is None:
            seconds = self._planned[items] = self.latency.planned(items)
        return seconds

    def has_work(self) -> bool:
        return len(self) > 0 and not self.busy

    def oldest_enqueued_at(self) -> float:
        return self.arrived[self.head]

    def queued_requests(self) -> int:
        """`DynamicBatcher.queued_requests`: none is ever on its way to the queue here."""
        return len(self)

    def max_queue_size(self) -> int:
        return self.model.max_queue_size

    def pre_queue_s(self) -> float:
        """`DynamicBatcher.pre_queue_s`: no reading or decoding here."""
        return 0.0

    def post_compute_s(self) -> float:
        """`DynamicBatcher.post_compute_s`: no answers to make or send here."""
        return 0.0

    def push(self, now: float, teaches: bool) -> None:
        """`DynamicBatcher.submit`: queue a request arriving `now`, due before its deadline by
        the time answers take after their batch."""
        deadline = now + self.model.deadline_s
        self.arrived.append(now)
        self.deadlines.append(deadline)
        self.dues.append(deadline - self.post_compute_s())
        self.teaches.append(teaches)

    def cut(self, count: int) -> tuple[list[float], list[float], list[bool]]:
        """Take the `count` oldest requests: their arrival times, deadlines and whether each
        teaches the calibration."""
        end = self.head + count
        taken = self.arrived[self.head : end], self.deadlines[self.head : end], self.teaches[self.head : end]
        self.head = end
        if self.head > 1024 and 2 * self.head > len(self.deadlines):
            del self.arrived[: self.head], self.deadlines[: self.head], self.dues[: self.head]
            del self.teaches[: self.head]
            self.head = 0
        return taken

    def missed(self, teaches: list[bool], now: float) -> None:
        """`Arrival.concluded(False)` for each request taken out unanswered (504)."""
        for teaching in teaches:
            if teaching:
                self.calibration.observe(False, now)

    def expired(self, now: float) -> int:
        """Queued requests whose deadline is no later than `now` (their timers have fired)."""
        return bisect.bisect_right(self.deadlines, now, self.head) - self.head

    def drop_unreachable(self, free_at: float) -> int:
        """`DynamicBatcher.drop_unreachable`: take out the queued requests with
        `free_at + planned(items) > due`; with one item each and the dues sorted, a prefix of
        the queue (every due below `free_at + planned(1)`). How many."""
        hopeless = bisect.bisect_left(self.dues, free_at + self.planned(1), self.head) - self.head
        self.missed(self.cut(hopeless)[2], free_at)
        return hopeless

    def plan(self, now: float) -> Plan:
        """`DynamicBatcher.plan`: the largest batch from the head whose planned run time meets
        the earliest due time in it, and its slack. Only called with requests queued."""
        planned, dues = self.planned, self.dues
        items, due = 1, dues[self.head]
        for entry_due in itertools.islice(dues, self.head + 1, None):
            grown = items + 1
            if grown > self.model.max_batch_size or now + planned(grown) > min(due, entry_due):
                break
            items, due = grown, min(due, entry_due)
        return self._plan_of(items, now)

    def configured_batch(self, now: float) -> Plan:
        """`DynamicBatcher.configured_batch` without preferred sizes: FIFO up to the maximum."""
        return self._plan_of(min(len(self), self.model.max_batch_size), now)

    def _plan_of(self, items: int, now: float) -> Plan:
        """`DynamicBatcher._plan_of` for the `items` oldest requests."""
        batch = self.dues[self.head : self.head + items]
        planned = self.planned(items)
        return Plan(batch, items, planned, min(batch) - now - planned, self.arrived[self.head])

    def pending_work(self) -> list[tuple[float, float]]:
        """`DynamicBatcher.pending_work`: (due, planned seconds) of every queued request, each
        costed at its share of the batch the queued items would make (one item each)."""
        cost = self.item_cost_s(len(self))
        return [(due, cost) for due in itertools.islice(self.dues, self.head, None)]

    def item_cost_s(self, pending_items: int) -> float:
        """`DynamicBatcher.item_cost_s`: planned seconds per item in a batch of `pending_items`
        (at most the maximum batch)."""
        size = min(max(pending_items, 1), self.model.max_batch_size)
        return self.planned(size) / size


@dataclass(eq=False)
class _Batch:
    """A running batch: the scheduler's run record (`_Run`: when it is predicted to end) and
    the simulation's own (whose requests, and how much work is truly left)."""

    queue: _Queue
    arrived: list[float]
    deadlines: list[float]
    teaches: list[bool]
    predicted_end: float
    remaining_s: float  # seconds of work left at full speed


class _Simulation:
    """The state of one run: queues, running batches, counts. `run` steps through the events;
    after each one the policy decides, as the server's scheduler does on every change."""

    def __init__(self, models: list[SimModel], policy: Policy, slots: int, noise: float, rng: np.random.Generator):
        self.policy = policy
        self.slots = slots
        self.noise = noise
        self.rng = rng
        self.queues = [_Queue(model, model.latency_model(), model.priority) for model in models]
        self.running: list[_Batch] = []
        self.now = 0.0
        self.busy_s = 0.0
        self.batch_sizes: list[int] = []
        names = [model.name for model in models]
        self.sent, self.good, self.late, self.dropped, self.refused = (dict.fromkeys(names, 0) for _ in range(5))
        self.latencies_s: dict[str, list[float]] = {name: [] for name in names}

    def result(self, pattern: str, offered_rps: float, duration_s: float) -> SimResult:
        return SimResult(
            self.policy,
            pattern,
            offered_rps,
            duration_s,
            self.sent,
            self.good,
            self.late,
            self.dropped,
            self.refused,
            self.latencies_s,
            self.batch_sizes,
            self.busy_s,
        )

    # -- events ---------------------------------------------------------------------------

    def run(self, requests: Sequence[tuple[float, int]]) -> None:
        """Every request arrives, then the run goes on until everything admitted is answered."""
        index = 0
        while True:
            next_arrival = requests[index][0] if index < len(requests) else math.inf
            next_expiry = min((queue.deadlines[queue.head] for queue in self.queues if len(queue)), default=math.inf)
            rate = self._rate()
            finishing = min(self.running, key=lambda batch: batch.remaining_s, default=None)
            next_completion = self.now + finishing.remaining_s / rate if finishing else math.inf
            moment = min(next_arrival, next_expiry, next_completion)
            if moment == math.inf:
                return
            self._advance(moment, rate)
            if finishing is not None and next_completion == moment:
                finishing.remaining_s = 0.0
                self._complete()
            elif next_expiry == moment:
                self._expire()
            else:
                self._arrive(self.queues[requests[index][1]])
                index += 1
            self._decide()

    def _rate(self) -> float:
        """How fast each running batch progresses: full speed up to `slots` batches, then the
        device is shared (only `free` ever runs more)."""
        return min(1.0, self.slots / len(self.running)) if self.running else 1.0

    def _advance(self, moment: float, rate: float) -> None:
        elapsed = moment - self.now
        for batch in self.running:
            batch.remaining_s -= elapsed * rate
        self.busy_s += elapsed * min(len(self.running), self.slots)
        self.now = moment

    def _complete(self) -> None:
        """Answer every batch whose work is done; their instances are free again."""
        done = [batch for batch in self.running if batch.remaining_s <= _FINISHED_S]
        self.running = [batch for batch in self.running if batch.remaining_s > _FINISHED_S]
        for batch in done:
            name = batch.queue.model.name
            latencies = self.latencies_s[name]
            for arrived, deadline, teaches in zip(batch.arrived, batch.deadlines, batch.teaches):
                latencies.append(self.now - arrived)
                on_time = self.now <= deadline
                if on_time:
                    self.good[name] += 1
                else:
                    self.late[name] += 1
                if teaches:
                    batch.queue.calibration.observe(on_time, self.now)
            batch.queue.busy = False

    def _expire(self) -> None:
        """The batcher's deadline timers: queued requests whose deadline has come are late."""
        for queue in self.queues:
            expired = queue.expired(self.now)
            if expired:
                queue.missed(queue.cut(expired)[2], self.now)
                self.late[queue.model.name] += expired

    def _arrive(self, queue: _Queue) -> None:
        self.sent[queue.model.name] += 1
        teaches = self._admit(queue, self.now + queue.model.deadline_s)
        if teaches is None:
            self.refused[queue.model.name] += 1
        else:
            queue.push(self.now, teaches)

    def _admit(self, queue: _Queue, deadline: float) -> bool | None:
        """Whether a request for `queue` arriving now with `deadline` is let in (None: refused),
        and if so whether it teaches the calibration: not when its queue is full (under every
        policy: `DynamicBatcher.submit`; the server's waiting room at the door,
        `DynamicBatcher.wait_for_room`, is not modelled: as `max_waiting=0`); under `slack`, by
        `DeviceScheduler.admit`'s rules and arithmetic."""
        if queue.queued_requests() >= queue.max_queue_size():
            return None
        if self.policy != "slack":
            return False
        now = self.now
        due = deadline - queue.post_compute_s()
        cost = queue.item_cost_s(queue.queued_requests() + 1)
        work = sorted(item for member in self.queues for item in member.pending_work())
        slots = self.slots
        busy = sum(max(run.predicted_end - now, 0.0) for run in self.running)
        ahead = busy + sum(seconds for item_due, seconds in work if item_due <= due)
        if now + max(queue.pre_queue_s(), queue.calibration.factor(now) * ahead / slots) + cost > due:
            return None
        # The earliest-deadline-first walk over the work due after it, the server's loop as one
        # expression (the same running totals, summed in the same order): refused if an item on
        # time now would be late with this request's cost ahead of it.
        later = [(item_due, seconds) for item_due, seconds in work if item_due > due]
        totals = itertools.islice(itertools.accumulate((seconds for _, seconds in later), initial=ahead), 1, None)
        if any(
            now + total / slots <= item_due < now + (total + cost) / slots
            for (item_due, _), total in zip(later, totals)
        ):
            return None
        return now + max(queue.pre_queue_s(), MAX_FACTOR * ahead / slots) + cost > due

    # -- decisions (`DeviceScheduler._decide`) ----------------------------------------------

    def _free_slot(self) -> bool:
        return self.policy == "free" or len(self.running) < self.slots

    def _decide(self) -> None:
        now = self.now
        if self.policy == "slack":
            free_at = now if self._free_slot() else min(batch.predicted_end for batch in self.running)
            for queue in self.queues:
                self.dropped[queue.model.name] += queue.drop_unreachable(max(free_at, now))
        while self._free_slot():
            due = [queue for queue in self.queues if queue.has_work()]
            if not due:
                return
            if self.policy == "slack":
                plans = [(queue, queue.plan(now)) for queue in due]
                chosen = _least_slack(cast("list[tuple[Schedulable, Plan | None]]", plans))
                if chosen is None:
                    return
                self._start(cast(_Queue, chosen[0]), chosen[1])
            elif self.policy == "fifo":
                queue = min(due, key=_Queue.oldest_enqueued_at)
                self._start(queue, queue.configured_batch(now))
            else:
                for queue in due:
                    self._start(queue, queue.configured_batch(now))

    def _start(self, queue: _Queue, plan: Plan) -> None:
        """`DeviceScheduler._start` and `DynamicBatcher.dispatch`: the run is recorded with its
        planned end; the batch truly takes its table time, scaled and perturbed."""
        arrived, deadlines, teaches = queue.cut(plan.items)
        factor = max(NOISE_FLOOR, 1.0 + self.noise * self.rng.standard_normal()) if self.noise else 1.0
        true_s = queue.latency.predict(plan.items) * queue.model.true_scale * factor
        self.running.append(_Batch(queue, arrived, deadlines, teaches, self.now + plan.predicted_s, true_s))
        queue.busy = True
        self.batch_sizes.append(plan.items)
