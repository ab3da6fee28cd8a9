"""`DeviceScheduler`: one per device (the CPU's cores, or one GPU), deciding which model's batch
runs next, how large, and which requests are refused or dropped because they cannot be on time.

Every model's batcher queues its requests; only the device scheduler dispatches them, into at
most `slots` batches computing at once (each still on one of its model's own instances). The
policies (`--scheduler`):

- `slack` (default; Clockwork's least slack with Nexus's early drop): for each model with queued
  work, the largest batch whose predicted run time (its `LatencyModel`) still meets the earliest
  deadline in it, and its slack (that deadline minus now minus the run time). The oldest batch
  runs first while every other one has the slack to wait for it (so loose deadlines do not make
  a model wait longer than arrival order would); once one would miss, least slack decides.
  Per-model `priority`: a higher priority runs first, and a lower one runs ahead of it only
  when it has less slack and the higher one's slack covers its run time. Requests that cannot
  be on time even alone (once a slot frees) are answered 504 at once and never computed; a new
  request is refused at the door (`admit`: before its body is read) when, served in deadline
  order after the work already admitted, it could not be on time or would make that work late
  (503 + Retry-After); past a full queue it waits at the door, undecoded, while its deadline
  allows (`DynamicBatcher.wait_for_room`; 429 once `max_waiting` wait). A model whose own
  predicted time refuses or drops its requests, with no batch measured for a while to correct
  it, is measured with a probe run when a slot is free and no model has work admitted (its
  prediction could otherwise be too high for good: nothing would run to show it).
- `fifo`: Triton's dynamic batcher with one global slot: the model whose oldest request came
  first runs, its batch filled as its batcher's configuration says; deadlines only drop what
  has expired.
- `free`: no device-wide decision; every model dispatches whenever one of its instances is free
  (the behaviour before the scheduler existed, for comparison).

It runs on the event loop; the batches compute on the models' instance threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, get_args

from easerve.service.errors import Overloaded
from easerve.service.scheduler.calibration import MAX_FACTOR, AdmissionCalibration
from easerve.service.scheduler.latency import LatencyModel
from easerve.service.settings import SchedulerPolicy as Policy
from easerve.service.settings import Settings

POLICIES: tuple[Policy, ...] = get_args(Policy)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """A batch a model could run now: `requests` are the batcher's own queue entries; `since`
    is when its oldest request was queued."""

    requests: Sequence[object]
    items: int
    predicted_s: float
    slack_s: float
    since: float = 0.0


class Schedulable(Protocol):
    """What the device scheduler asks of a model's batcher (`DynamicBatcher`)."""

    model: str
    priority: int
    latency: LatencyModel
    calibration: AdmissionCalibration

    def has_work(self) -> bool:
        """Queued requests and an instance free to compute them."""
        ...

    def oldest_enqueued_at(self) -> float: ...

    def seconds_until_due(self, now: float) -> float:
        """How long the batcher's own `max_queue_delay` still holds its next batch back."""
        ...

    def drop_unreachable(self, free_at: float) -> int:
        """Answer 504 every queued request that cannot be done by its deadline even alone,
        starting at `free_at`; how many were."""
        ...

    def plan(self, now: float) -> Plan | None:
        """The largest batch from the head of the queue that still meets its earliest deadline."""
        ...

    def configured_batch(self, now: float) -> Plan:
        """The next batch as its batching configuration forms it (Triton's rules)."""
        ...

    def pending_work(self, excluding: object = None) -> list[tuple[float, float]]:
        """(due, planned seconds) of every request queued or on its way to the queue (but the
        arrival `excluding`)."""
        ...

    def item_cost_s(self, pending_items: int) -> float:
        """Planned seconds per item in a batch of `pending_items`."""
        ...

    def queued_requests(self) -> int:
        """Requests queued or on their way to the queue (admitted at the door, not yet queued)."""
        ...

    def pre_queue_s(self) -> float:
        """How long requests recently took from the door to the queue (reading, decoding)."""
        ...

    def post_compute_s(self) -> float:
        """How long answers recently took after their batch ended."""
        ...

    def dispatch(self, requests: Sequence[object], done: Callable[[], None]) -> None:
        """Compute `requests` on a free instance; `done()` once the batch has finished."""
        ...

    def wants_probe(self) -> bool:
        """Whether the model should be measured now (its own predicted time refused its
        requests and no batch has corrected it lately) and has an instance free for it."""
        ...

    def probe(self, done: Callable[[], None]) -> None:
        """Measure the model once on a free instance; `done()` once it has run."""
        ...

    def stop(self, reason: str) -> None:
        """The scheduler failed: answer everything queued, accept nothing more."""
        ...


# With the runtime's default threads (one per core) two batches at once: one small model's run
# leaves cores idle between and inside its operators, which a second run fills (see
# docs/scheduling.md for the figures of one against two).
DEFAULT_CPU_SLOTS = 2


def default_slots(policy: Policy, intra_op_threads: int, cores: int | None = None) -> int | None:
    """Batches computing at once: none as a limit for `free`; one for `fifo` (Triton's one
    global slot); for `slack`, the cores divided by the threads one run uses, or
    `DEFAULT_CPU_SLOTS` with the runtime's default threads."""
    if policy == "free":
        return None
    if policy == "fifo":
        return 1
    if intra_op_threads == 0:
        return DEFAULT_CPU_SLOTS
    return max(1, (cores or os.cpu_count() or 1) // intra_op_threads)


@dataclass
class DeviceStats:
    """What the scheduler has done, for `/metrics`, `/v1/models` and `bench scheduling`."""

    busy_s: float = 0.0  # slot-seconds spent computing
    decision_s: float = 0.0  # time spent deciding (the scheduler's overhead)
    batches: int = 0
    refused_at_door: int = 0
    dropped: int = 0
    probes: int = 0  # runs that measured a model whose predictions refused its requests


@dataclass(eq=False)
class _Run:
    predicted_end: float
    started: float


@dataclass(eq=False)
class DeviceScheduler:
    """See the module docstring. `register` a batcher when it starts, `unregister` it when it
    has drained; `notify` whenever a batcher's queue or instances change."""

    policy: Policy = "free"
    slots: int | None = None
    stats: DeviceStats = field(default_factory=DeviceStats)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeviceScheduler:
        """The scheduler of this process's device (the CPU's cores) for `settings`."""
        slots = settings.device_slots or default_slots(settings.scheduler, settings.intra_op_threads)
        return cls(settings.scheduler, slots)

    def describe(self) -> dict[str, object]:
        """The policy, slots and what it has done (`/v1/models`)."""
        return {"policy": self.policy, "slots": self.slots, **dataclasses.asdict(self.stats)}

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown scheduling policy {self.policy!r}; choose from {', '.join(POLICIES)}")
        if self.policy == "free":
            self.slots = None
        elif self.slots is None or self.slots < 1:
            raise ValueError(f"the {self.policy} policy needs at least one slot")
        self._members: list[Schedulable] = []
        self._running: set[_Run] = set()
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        # When the deciding task looks again by itself (inf: only on a change).
        self._wakes_at = math.inf

    # -- membership -----------------------------------------------------------------------------

    def register(self, batcher: Schedulable) -> None:
        """Schedule `batcher`'s requests from now on (starts the scheduler on the running loop)."""
        if batcher not in self._members:
            self._members.append(batcher)
        if self._task is None or self._task.done():
            self._changed = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="device-scheduler")
        self.notify()

    def unregister(self, batcher: Schedulable) -> None:
        with contextlib.suppress(ValueError):
            self._members.remove(batcher)

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def close(self) -> None:
        """Stop deciding (after every batcher has drained)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # -- admission at the door ------------------------------------------------------------------

    def admit(self, batcher: Schedulable, deadline: float) -> bool:
        """Under `slack`, refuse a new request for `batcher` before any of its work is done
        (Overloaded) when, served in deadline order after the work already admitted, it could not
        be on time (its way to the queue, the work due before it, stretched by the model's
        `AdmissionCalibration`, and its own compute), or when fitting it in would make a request
        admitted earlier late (an earliest-deadline-first feasibility check: what is admitted
        stays on time). Admitted: whether the work ahead, stretched as far as the calibration
        goes, would have refused it (then what becomes of it teaches the calibration)."""
        if self.policy != "slack":
            return False
        now = time.perf_counter()
        due = deadline - batcher.post_compute_s()
        cost = batcher.item_cost_s(batcher.queued_requests() + 1)
        work = sorted(self._pending_work())
        slots = self.slots or 1
        ahead = self._due_first_s(due, now, work)
        pre_queue_s = batcher.pre_queue_s()

        def late_with(stretch: float) -> bool:
            return now + max(pre_queue_s, stretch * ahead / slots) + cost > due

        factor = batcher.calibration.factor(now)
        if late_with(factor):
            ahead_s = factor * ahead / slots
            self._refuse(
                batcher,
                f"about {1000 * ahead_s:.0f} ms of work due before it is ahead of it on the device (as this "
                f"model's admitted requests lately fared), requests take about {1000 * pre_queue_s:.0f} ms to reach "
                f"its queue and {1000 * (deadline - due):.0f} ms after their batch to be answered, and it needs "
                f"{1000 * cost:.0f} ms itself: {1000 * max(deadline - now, 0.0):.0f} ms are left",
                ahead_s,
            )
        total = ahead
        for item_due, seconds in work:
            if item_due <= due:
                continue
            total += seconds
            if now + total / slots <= item_due < now + (total + cost) / slots:
                self._refuse(
                    batcher,
                    "the device is full until then with work admitted before it (it would make that late)",
                    total / slots,
                )
        return late_with(MAX_FACTOR)

    def _refuse(self, batcher: Schedulable, why: str, retry_after_s: float) -> None:
        self.stats.refused_at_door += 1
        raise Overloaded(
            f"{batcher.model} cannot answer within this request's deadline: {why}; retry later or allow more time",
            retry_after_s=retry_after_s,
        )

    def reachable(self, batcher: Schedulable, deadline: float, arrival: object = None) -> bool:
        """Under `slack`, whether a request of `batcher` due at `deadline`, ready to queue now,
        can still be computed in time after the work due before it (checked before decoding;
        `arrival` is the request's own entry among the work on its way, not counted ahead of it)."""
        if self.policy != "slack":
            return True
        now = time.perf_counter()
        due = deadline - batcher.post_compute_s()
        ahead = self._due_first_s(due, now, self._pending_work(excluding=arrival))
        return now + ahead / (self.slots or 1) + batcher.item_cost_s(1) <= due

    def _pending_work(self, excluding: object = None) -> list[tuple[float, float]]:
        return [item for member in self._members for item in member.pending_work(excluding)]

    def _due_first_s(self, due: float, now: float, work: list[tuple[float, float]]) -> float:
        """Seconds of device work ahead of something due at `due`: what still runs, and the
        `work` due no later (over all slots together)."""
        busy = sum(max(run.predicted_end - now, 0.0) for run in self._running)
        return busy + sum(seconds for item_due, seconds in work if item_due <= due)

    # -- deciding ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._decide_on_every_change()
        except Exception as error:
            logger.exception("the device scheduler failed")
            for member in list(self._members):
                member.stop(str(error))
            raise

    async def _decide_on_every_change(self) -> None:
        changed = self._changed
        assert changed is not None
        while True:
            changed.clear()
            started = time.perf_counter()
            wake_at = self._decide(started)
            self.stats.decision_s += time.perf_counter() - started
            self._wakes_at = math.inf if wake_at is None else wake_at
            if wake_at is None:
                await changed.wait()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wake_at - time.perf_counter(), 0.0)):
                    await changed.wait()

    def has_free_slot(self) -> bool:
        """Whether a batch (or a probe) could start now."""
        return self.slots is None or len(self._running) < self.slots

    def _decide(self, now: float) -> float | None:
        """Dispatch every batch the policy chooses now; when to look again (None: on a change)."""
        if self.policy == "slack":
            free_at = now if self.has_free_slot() else min(run.predicted_end for run in self._running)
            for member in self._members:
                self.stats.dropped += member.drop_unreachable(max(free_at, now))
        wake_at: float | None = None
        while self.has_free_slot():
            due = []
            for member in self._members:
                if not member.has_work():
                    continue
                wait_s = member.seconds_until_due(now)
                if wait_s > 0:
                    wake_at = min(wake_at or math.inf, now + wait_s)
                else:
                    due.append(member)
            if not due:
                break
            if self.policy == "slack":
                chosen = _least_slack([(member, member.plan(now)) for member in due])
                if chosen is None:
                    break
                self._start(chosen[0], chosen[1], now)
            elif self.policy == "fifo":
                member = min(due, key=lambda m: m.oldest_enqueued_at())
                self._start(member, member.configured_batch(now), now)
            else:
                for member in due:
                    self._start(member, member.configured_batch(now), now)
        if self.policy == "slack":
            self._probe_where_needed(now)
        return wake_at

    def _probe_where_needed(self, now: float) -> None:
        """With slots left over, measure each model whose own predicted time refuses its
        requests without a batch to correct it (a profile taken while something else held
        the cores would otherwise refuse it for good)."""
        if any(member.queued_requests() for member in self._members):
            return  # the free slot is for the work admitted: a probe would take time it was promised
        for member in self._members:
            if not self.has_free_slot():
                return
            if member.wants_probe():
                self.stats.probes += 1
                # Its prediction, not the planned time: the margin would inflate an estimate
                # under suspicion further, and the scheduler would drop more while it runs.
                run = _Run(now + member.latency.predict(1), now)
                self._running.add(run)
                member.probe(lambda run=run: self._finished(run))

    def _start(self, member: Schedulable, plan: Plan, now: float) -> None:
        run = _Run(now + plan.predicted_s, now)
        self._running.add(run)
        self.stats.batches += 1
        member.dispatch(plan.requests, lambda: self._finished(run))

    def _finished(self, run: _Run) -> None:
        self._running.discard(run)
        finished = time.perf_counter()
        self.stats.busy_s += finished - run.started
        # Decide at once rather than on the scheduler's next turn of the loop: the slot would
        # idle for as long as the loop is busy. The deciding task need only look again when
        # this decision wants a look sooner than it planned (nothing else changed).
        wake_at = self._decide(finished)
        self.stats.decision_s += time.perf_counter() - finished
        if wake_at is not None and wake_at < self._wakes_at:
            self.notify()


def _least_slack(plans: list[tuple[Schedulable, Plan | None]]) -> tuple[Schedulable, Plan] | None:
    """The batch to run. By default the highest priority's oldest (arrival order: with slack to
    spare, nobody waits longer than first come first served would make it); but when running it
    first would make another batch miss its deadline (that one's slack is shorter than its run
    time), least slack decides: the highest priority's least slack, unless a lower priority's
    batch has less slack and fits into that slack (then it runs first: nobody misses for it)."""
    candidates = [(member, plan) for member, plan in plans if plan is not None]
    if not candidates:
        return None
    oldest = min(candidates, key=lambda c: (-c[0].priority, c[1].since))
    if all(plan.slack_s >= oldest[1].predicted_s for member, plan in candidates if member is not oldest[0]):
        return oldest
    best = min(candidates, key=lambda c: (-c[0].priority, c[1].slack_s, -c[1].items))
    best_member, best_plan = best
    stealers = [
        (member, plan)
        for member, plan in candidates
        if member.priority < best_member.priority
        and plan.slack_s < best_plan.slack_s
        and plan.predicted_s <= best_plan.slack_s
    ]
    return min(stealers, key=lambda c: c[1].slack_s) if stealers else best
