"""Dynamic batching: one queue per model between the request handlers and its runners; the
device's `DeviceScheduler` (service/scheduler) decides when and how large each batch runs.

How a batch is formed:
- Requests wait in a bounded FIFO queue. Whenever the device scheduler gives the model a slot
  and one of its instances is free, a batch is taken from the head of the queue: under the
  `slack` policy the largest batch whose predicted run time (the model's `LatencyModel`) still
  meets its earliest deadline; under `fifo` and `free` (Triton's dynamic batcher) the oldest
  request and every later shape-compatible one that still fits in `max_batch_size` items (a
  request of n images counts n). A lone request runs at once.
- With `max_queue_delay_s` > 0 a batch that is not full waits until the *oldest* queued request
  has waited that long; new arrivals do not restart the clock.
- Under `slack` a queued request that cannot be done by its deadline even alone is answered
  `DeadlineUnreachable` (504) at once and never computed, and a request may be refused before
  its body is read (`expect`).
- Each request has a deadline. A timer answers `DeadlineExceeded` the moment it passes, while
  the request is queued (it is then never computed) or while its batch computes (its rows are
  dropped when the batch returns).
- A batch is shared by many clients, so a failing batch never fails a valid request: its
  requests are run again one by one, and only the one that fails alone gets the error (422
  when the runner refused its input, `InputRejected`; else 500).
- A full queue answers `QueueFull` with a Retry-After estimate. Every accepted request gets
  exactly one answer: its outputs, or an error.
- `drain` stops accepting, runs everything queued, then returns.
- A request may bring `Deferred` inputs: its part made on the runner's thread when its batch
  runs (small images decoded there: Python once per batch, not a thread hop per request), joined
  with the other requests' parts at once. A request whose part cannot be made fails alone.
- A request may bring a `Finish`: what its answer is made of its outputs. It runs on the
  runner's thread right after the batch (its batch-wide step once for every request of the batch
  that shares it, vectorised), so a request's answer is ready when its future resolves: no
  further thread hop, and no post-processing on the event loop. A request whose finishing fails
  fails alone.

A model runs as one or more instances (Triton's `instance_group` count): each instance is a
runner of its own called on its own dedicated thread, so the event loop keeps accepting requests
(and firing deadline timers) while batches compute, and at most one batch per instance is in
flight. With several instances a batch is dispatched whenever any instance is free: on a small
CPU several single-threaded instances can keep the cores busier than one multi-threaded one
(figures: docs/benchmarks.md#instances-one-two-threaded-session-or-two-single-threaded-ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from easerve.service.errors import (
    DeadlineExceeded,
    DeadlineUnreachable,
    InferenceFailed,
    InvalidInput,
    Overloaded,
    QueueFull,
    ServiceError,
    Unavailable,
)
from easerve.service.runners.base import InputRejected
from easerve.service.scheduler.calibration import AdmissionCalibration
from easerve.service.scheduler.device import DeviceScheduler, Plan
from easerve.service.scheduler.latency import HORIZON_S, LatencyModel

logger = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
Shapes = dict[str, tuple[int, ...]]
RunBatch = Callable[[Tensors], Tensors]
# (input name, shape without the batch dim, dtype) per input: equal signatures concatenate.
Signature = tuple[tuple[str, tuple[int, ...], str], ...]

# Weight of the newest batch in the running mean of batch compute time (for Retry-After).
_COMPUTE_TIME_SMOOTHING = 0.2
# Requests whose times from the door to the queue, and from their batch's end to their answer,
# are kept for the scheduler's predictions.
_TIMED_WINDOW = 64
# ... and forgotten after this long: a model whose requests were all refused for a while (so
# that none was timed) must not stay refused on the strength of a burst long gone.
_TIMED_HORIZON_S = 2.0
# How stale their percentile may be (a fraction of a batch on the slowest models).
_QUANTILE_REFRESH_S = 0.01
# The longest wait between two probes of a model whose probes keep confirming (or failing).
MAX_PROBE_INTERVAL_S = 300.0


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 256
    # Requests held undecoded at the door while the queue is full (slack policy only).
    max_waiting: int = 1024
    # Batch sizes to cut a batch at when more is queued (sorted); empty: fill to max_batch_size.
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Deferred:
    """A request's inputs made where its batch runs, on the instance's thread: `load()` makes its
    part (decoding; a failure fails this request alone), then `join(parts)` builds the inputs of
    every request of the batch with an equal `join` at once. Its `items` and `signature` are
    known before, so it queues, batches and is budgeted as built tensors are."""

    items: int
    signature: Signature
    load: Callable[[], object]
    join: Callable[[list[object]], Tensors]


Inputs = Tensors | Deferred
# A `Deferred` request's part not made yet, and the place of a request answered before its batch
# ran (never delivered: its future is done).
_UNMADE = object()
_ANSWERED = DeadlineExceeded("answered before its batch ran")


@dataclass(frozen=True)
class BatchMemory:
    """The working memory a model's batches may hold: `request_bytes(shapes)` predicts one
    request's (the model's memory model at its shape), and a batch is cut before it passes
    `limit_bytes`. Admission bounds what is in flight where it admits; this holds where requests
    admitted apart meet in one queue (the HTTP workers' model process, a Ray replica). A request
    alone always runs: its own admission bounded it."""

    request_bytes: Callable[[Shapes], int]
    limit_bytes: int


@dataclass(frozen=True)
class BatchOutcome:
    """One request's answer: its rows of every output, how it went, and what its `Finish`
    made of them (`answer`; None without one)."""

    outputs: Tensors
    queue_s: float
    compute_s: float
    batch_size: int
    answer: object = None


@dataclass(frozen=True)
class Finish:
    """What a request's answer is made of its outputs, computed where its batch was.

    `prepare` (optional; equal objects for requests that can share it, e.g. a frozen dataclass)
    turns a batch's outputs into what the answers need, for every row at once; `answer` then
    makes one request's answer of its rows of the prepared tensors and its `BatchOutcome`.
    `light`: the answer takes microseconds (a class ranking, a few boxes), so a batcher that
    computed elsewhere may make it on its event loop rather than on a thread.
    """

    answer: Callable[[BatchOutcome], object]
    prepare: Callable[[Tensors], Tensors] | None = None
    light: bool = False

    def applied(self, outcome: BatchOutcome) -> BatchOutcome:
        """`outcome` with its answer, for one request on its own (a batcher computed elsewhere)."""
        if self.prepare is not None:
            outcome = dataclasses.replace(outcome, outputs=self.prepare(outcome.outputs))
        return dataclasses.replace(outcome, answer=self.answer(outcome))


class BatchObserver(Protocol):
    """What the batcher reports (the metrics implement it)."""

    def queue_depth_changed(self, model: str, depth: int) -> None: ...

    def batch_executed(self, model: str, batch_size: int, compute_s: float, predicted_s: float) -> None: ...

    def request_succeeded(self, model: str, queue_s: float, compute_s: float) -> None: ...

    def request_failed(self, model: str, reason: str) -> None: ...


class Batcher(Protocol):
    """What the service asks of a model's batcher: `DynamicBatcher` here, or a stand-in that
    sends the tensors to the model computed elsewhere (the Ray Serve ingress's)."""

    @property
    def queue_depth(self) -> int: ...

    @property
    def accepting(self) -> bool: ...

    def expect(self, deadline: float) -> Arrival:
        """Admit a request at the door, before its body is read (QueueFull / Overloaded when the
        device scheduler foresees it cannot be served in time); it counts as pending work until
        it is submitted or gives up (`Arrival.leave`)."""
        ...

    # Whether `submit` takes `Deferred` inputs (made where the batch runs, in this process).
    takes_deferred: bool

    async def submit(self, inputs: Inputs, deadline: float, finish: Finish | None = None) -> BatchOutcome: ...

    async def drain(self, timeout_s: float) -> None: ...

    def close(self) -> None: ...


class Arrival:
    """A request admitted at the door of a batcher: counted as work on its way to the queue
    until it `leave`s (queued, or given up), and timed on the way in (door to queue) and out
    (its batch's end to its answer), so the scheduler can foresee both for the next ones."""

    def __init__(self, batcher: DynamicBatcher | None = None, deadline: float = 0.0, teaches: bool = False) -> None:
        self.batcher = batcher
        self.deadline = deadline
        self.since = time.perf_counter()
        self._on_its_way = batcher is not None
        # Whether the work ahead could have refused it: only then does its fate teach the door.
        self._calibration = batcher.calibration if batcher is not None and teaches else None

    async def enter(self) -> None:
        """Wait, undecoded, until its model's queue has room for it (Overloaded if its deadline
        would not allow it any more; QueueFull when too many wait already)."""
        if self._on_its_way and self.batcher is not None:
            await self.batcher.wait_for_room(self)

    def reachable(self) -> bool:
        """Whether the request can still be on time once decoded (by the device's work ahead
        of it now); always True once queued, or for a batcher that does not schedule here."""
        return not self._on_its_way or self.batcher is None or self.batcher.reachable(self)

    def leave(self, queued: bool = False) -> None:
        """`queued`: it reached the queue; else it gave up. Idempotent."""
        if self._on_its_way and self.batcher is not None:
            self._on_its_way = False
            self.batcher.arrival_left(self, queued)

    def answered(self, after_compute_s: float) -> None:
        """Its answer is out, `after_compute_s` after its batch ended. Once."""
        if self.batcher is not None:
            self.batcher.answered(after_compute_s)
            self.batcher = None

    def concluded(self, on_time: bool) -> None:
        """Whether it was answered within its deadline (or timed out, or late): what the door
        learns for the next ones, if its admission was the work ahead's to decide. Once."""
        if self._calibration is not None:
            self._calibration.observe(on_time, time.perf_counter())
            self._calibration = None


# What a batcher whose model computes elsewhere (a stand-in) admits: nothing to count here.
UNCOUNTED = Arrival()


class StandInBatcher:
    """The base of a batcher whose model is computed elsewhere (the Ray Serve ingress's, an HTTP
    worker's). The model's own batcher schedules and refuses its requests, so nothing is admitted
    here (`expect`); each request sent and not answered yet is counted (`_outstanding`, refused
    with `Unavailable` once draining) and `drain` waits for them."""

    takes_deferred = False

    def __init__(self, model: str) -> None:
        self.model = model
        self._count = 0
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queue_depth(self) -> int:
        """Requests sent to the model and not answered yet."""
        return self._count

    @property
    def accepting(self) -> bool:
        return self._accepting

    def expect(self, deadline: float) -> Arrival:
        return UNCOUNTED

    @contextlib.contextmanager
    def _outstanding(self) -> Iterator[None]:
        if not self._accepting:
            raise Unavailable(f"model {self.model} is not accepting requests (shutting down)")
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    @staticmethod
    async def _answered(outcome: BatchOutcome, finish: Finish | None, on_the_loop: bool) -> BatchOutcome:
        """`outcome` with the answer `finish` makes of it: on the event loop (a light answer), or
        on a thread."""
        if finish is None:
            return outcome
        return finish.applied(outcome) if on_the_loop else await asyncio.to_thread(finish.applied, outcome)

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting; wait (at most `timeout_s`) for the answers still outstanding."""
        self._accepting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        if self._count:
            logger.warning("%s: %d request(s) still outstanding after the drain", self.model, self._count)

    def close(self) -> None:
        pass


class NullObserver:
    """A `BatchObserver` that records nothing."""

    def queue_depth_changed(self, model: str, depth: int) -> None:
        pass

    def batch_executed(self, model: str, batch_size: int, compute_s: float, predicted_s: float) -> None:
        pass

    def request_succeeded(self, model: str, queue_s: float, compute_s: float) -> None:
        pass

    def request_failed(self, model: str, reason: str) -> None:
        pass


class RecentTimes:
    """Seconds recent requests took for a step, and their 90th percentile: over the last
    `_TIMED_WINDOW` samples of the last `_TIMED_HORIZON_S` (0 without any). The percentile is
    asked for several times per request, so it is recomputed at most every `_QUANTILE_REFRESH_S`."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=_TIMED_WINDOW)
        self._p90 = 0.0
        self._computed_at = -math.inf

    def add(self, now: float, seconds: float) -> None:
        self._samples.append((now, seconds))

    def p90(self) -> float:
        now = time.perf_counter()
        if now - self._computed_at >= _QUANTILE_REFRESH_S:
            self._computed_at = now
            since = now - _TIMED_HORIZON_S
            while self._samples and self._samples[0][0] < since:
                self._samples.popleft()
            recent = sorted(seconds for _, seconds in self._samples)
            self._p90 = recent[int(0.9 * (len(recent) - 1))] if recent else 0.0
        return self._p90


def batch_items(inputs: Tensors) -> int:
    """The batch dimension shared by every input; ValueError if they disagree or it is 0."""
    sizes = {array.shape[0] if array.ndim else 0 for array in inputs.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"inputs need one common, non-zero batch dimension, got {sorted(sizes)}")
    return sizes.pop()


def _timed_run(run_batch: RunBatch, inputs: Tensors) -> float:
    started = time.perf_counter()
    run_batch(inputs)
    return time.perf_counter() - started


def signature_of(inputs: Tensors) -> Signature:
    """Requests with equal signatures can be concatenated along the batch dimension."""
    return tuple((name, tuple(array.shape[1:]), array.dtype.str) for name, array in sorted(inputs.items()))


def _items_and_signature(inputs: Inputs) -> tuple[int, Signature]:
    if isinstance(inputs, Deferred):
        return inputs.items, inputs.signature
    return batch_items(inputs), signature_of(inputs)


def _shapes(items: int, signature: Signature) -> Shapes:
    return {name: (items, *shape) for name, shape, _ in signature}


@dataclass(frozen=True)
class _Failed:
    """Why a request's `Deferred` part could not be made (kept: it is not made again)."""

    error: Exception


def _made(batch: list[_Pending], model: str) -> tuple[list[_Pending], Tensors, dict[int, Exception]]:
    """On the instance's thread: the requests of `batch` whose inputs could be made, their
    inputs joined (consecutive `Deferred` parts with an equal `join` at once), and each other
    request's failure by its place in `batch`. A request answered meanwhile (its deadline passed)
    is not made at all; a part made, or found unmakeable, is kept for a run of its own."""
    kept: list[_Pending] = []
    failures: dict[int, Exception] = {}
    for index, entry in enumerate(batch):
        if entry.future.done():
            failures[index] = _ANSWERED
            continue
        if isinstance(entry.inputs, Deferred) and entry.part is _UNMADE:
            entry.part = _part_of(entry.inputs, model)
        if isinstance(entry.part, _Failed):
            failures[index] = entry.part.error
            continue
        kept.append(entry)
    parts: list[Tensors] = []
    for _, run in itertools.groupby(kept, key=_joined_by):
        together = list(run)
        inputs = together[0].inputs
        parts.append(inputs.join([entry.part for entry in together]) if isinstance(inputs, Deferred) else inputs)
    return kept, _concatenate(parts) if parts else {}, failures


def _joined_by(entry: _Pending) -> object:
    """What joins `entry`'s inputs with its neighbours': a `Deferred`'s `join`; built tensors
    stand alone."""
    return entry.inputs.join if isinstance(entry.inputs, Deferred) else entry


def _part_of(inputs: Deferred, model: str) -> object:
    """`inputs.load()`, or why it failed: the request's own fault (a `ServiceError`: corrupt
    pixels, its deadline), else the server's (logged, answered 500)."""
    try:
        return inputs.load()
    except ServiceError as error:
        return _Failed(error)
    except Exception as error:  # noqa: BLE001 - this request alone fails
        logger.error("%s: making a request's inputs failed", model, exc_info=error)
        return _Failed(InferenceFailed(f"making the inputs of a request of {model} failed: {error}"))


def _concatenate(parts: list[Tensors]) -> Tensors:
    """The tensors of `parts` joined along the batch dimension (no copy for a single part)."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _finished(
    batch: list[_Pending], outputs: Tensors, started: float, compute_s: float
) -> list[BatchOutcome | Exception]:
    """Each request's outcome: its rows of `outputs`, answered by its `Finish` (the exception in
    its place when that fails). A `prepare` that every request of the batch shares runs once on
    the whole batch; otherwise each request's runs on its own rows."""
    items = sum(entry.items for entry in batch)
    prepares = {entry.finish.prepare if entry.finish else None for entry in batch}
    shared = prepares.pop() if len(prepares) == 1 else None
    prepared = shared(outputs) if shared is not None else outputs
    results: list[BatchOutcome | Exception] = []
    offset = 0
    for entry in batch:
        rows = slice(offset, offset + entry.items)
        offset += entry.items
        queue_s = started - entry.enqueued_at
        if entry.finish is None or entry.future.done():  # no answer to make (or answered meanwhile)
            results.append(
                BatchOutcome({name: array[rows] for name, array in outputs.items()}, queue_s, compute_s, items)
            )
            continue
        try:
            if shared is not None:
                own = {name: array[rows] for name, array in prepared.items()}
            else:
                own = {name: array[rows] for name, array in outputs.items()}
                if entry.finish.prepare is not None:
                    own = entry.finish.prepare(own)
            outcome = BatchOutcome(own, queue_s, compute_s, items)
            results.append(dataclasses.replace(outcome, answer=entry.finish.answer(outcome)))
        except Exception as error:  # noqa: BLE001 - this request alone fails, with its reason
            results.append(error)
    return results


@dataclass(eq=False)
class _Pending:
    inputs: Inputs
    items: int
    signature: Signature
    enqueued_at: float  # time.perf_counter()
    deadline: float  # time.perf_counter()
    due: float  # when its batch must end for the answer to be out by the deadline
    future: asyncio.Future[BatchOutcome]
    finish: Finish | None = None
    working_bytes: int = 0  # the model's predicted working memory for it
    expiry: asyncio.TimerHandle | None = field(default=None)
    computing: bool = False
    # Its `Deferred` part once made (kept: a failed batch runs its requests again one by one).
    part: object = _UNMADE


@dataclass(eq=False)
class _Instance:
    """One runner of the model and the one thread it is called on."""

    run_batch: RunBatch
    executor: ThreadPoolExecutor


class DynamicBatcher:
    """The queue of one model. `start()` it on the serving loop, `submit` from handlers,
    `drain()` then `close()` at shutdown.

    `instances` holds one `run_batch` per model instance; each is only ever called from its own
    thread, one batch at a time. `scheduler` is the device's (default: one of its own with the
    `free` policy, so the batcher dispatches whenever an instance is free); `latency` predicts
    its batches' run times and learns from every batch; `priority` ranks the model against the
    others on the device; `probe_inputs` (one item) let the device scheduler measure the model
    when its predictions refuse requests and no batch has corrected them for a while;
    `takes_deferred`: whether requests may queue `Deferred` inputs (made on the instance's thread).
    """

    def __init__(
        self,
        model: str,
        instances: Sequence[RunBatch],
        config: BatchingConfig,
        observer: BatchObserver | None = None,
        scheduler: DeviceScheduler | None = None,
        latency: LatencyModel | None = None,
        priority: int = 0,
        memory: BatchMemory | None = None,
        probe_inputs: Tensors | None = None,
        takes_deferred: bool = True,
    ) -> None:
        if not instances:
            raise ValueError(f"{model}: a batcher needs at least one model instance")
        self.model = model
        self.config = config
        self.priority = priority
        self.takes_deferred = takes_deferred
        self.latency = latency or LatencyModel(config.max_batch_size)
        self.calibration = AdmissionCalibration()
        self._memory = memory
        self._observer = observer or NullObserver()
        self._device = scheduler or DeviceScheduler()
        self._queue: deque[_Pending] = deque()
        self._arriving: dict[Arrival, float] = {}
        self._waiting: dict[Arrival, asyncio.Future[None]] = {}  # at the door, in arrival order
        self._pre_queue_s = RecentTimes()
        self._post_compute_s = RecentTimes()
        self._progress = asyncio.Event()
        self._free: list[_Instance] = [
            _Instance(run_batch, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"runner-{model}-{index}"))
            for index, run_batch in enumerate(instances)
        ]
        self._instances = tuple(self._free)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._started = False
        self._closing = False
        self._mean_batch_s = 0.0
        self._probe_inputs = probe_inputs
        self._probing = False
        # When the model's own predicted time last refused or dropped a request, and when it
        # was last probed (time.perf_counter()); the wait before the next probe (`_probed`).
        self._refused_alone_at = -math.inf
        self._probed_at = -math.inf
        self._probe_interval_s = HORIZON_S

    @property
    def queue_depth(self) -> int:
        """Requests waiting (not counting the batch being computed)."""
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        return self._started and not self._closing

    @property
    def policy(self) -> str:
        """The device scheduler's policy (`--scheduler`)."""
        return self._device.policy

    def start(self) -> None:
        """Join the device scheduler (on the running event loop)."""
        if not self._started:
            self._started = True
            self._device.register(self)

    def expect(self, deadline: float) -> Arrival:
        """See `Batcher.expect`."""
        if not self.accepting:
            raise Unavailable(f"model {self.model} is not accepting requests (shutting down)")
        try:
            teaches = self._device.admit(self, deadline)
        except ServiceError as error:
            now = time.perf_counter()
            if self._alone_too_late(now, deadline - self.post_compute_s(), 1):
                self._refused_alone(now)
            self._observer.request_failed(self.model, error.reason)
            raise
        arrival = Arrival(self, deadline, teaches)
        self._arriving[arrival] = deadline
        return arrival

    async def wait_for_room(self, arrival: Arrival) -> None:
        """Under `slack`, hold an admitted request at the door, its body unread, while its model's
        queue and the requests being decoded for it fill `max_queue_size`: it goes in, first come
        first in, as soon as there is room, so that clients beyond the queue wait instead of
        being refused and coming straight back. Refused when `max_waiting` wait already
        (QueueFull) or once the wait leaves no time for its own compute (Overloaded)."""
        if self._in_house() <= self.config.max_queue_size or self.policy != "slack":
            return
        if len(self._waiting) >= self.config.max_waiting:
            self._arriving.pop(arrival, None)
            self._observer.request_failed(self.model, QueueFull.reason)
            raise QueueFull(
                f"the queue of {self.model} is full ({self.config.max_queue_size} requests, "
                f"{self.config.max_waiting} more waiting); retry later",
                self._retry_after_s(),
            )
        room = asyncio.get_running_loop().create_future()
        self._waiting[arrival] = room
        patience = arrival.deadline - time.perf_counter() - self.latency.planned(1) - self.post_compute_s()
        try:
            async with asyncio.timeout(max(patience, 0.0)):
                await room
        except TimeoutError:
            self._observer.request_failed(self.model, Overloaded.reason)
            raise Overloaded(
                f"{self.model} had no room in its queue in time for this request's deadline; retry later or allow "
                "more time",
                retry_after_s=self._retry_after_s(),
            ) from None
        finally:
            self._waiting.pop(arrival, None)

    def _in_house(self) -> int:
        """Requests queued or being read and decoded for the queue (not waiting at the door)."""
        return len(self._queue) + len(self._arriving) - len(self._waiting)

    def _let_in(self) -> None:
        """Let waiting requests in, first come first in, while the queue has room."""
        while self._waiting and self._in_house() < self.config.max_queue_size:
            arrival, room = next(iter(self._waiting.items()))
            del self._waiting[arrival]
            if not room.done():
                room.set_result(None)

    def arrival_left(self, arrival: Arrival, queued: bool) -> None:
        self._arriving.pop(arrival, None)
        if queued:
            now = time.perf_counter()
            self._pre_queue_s.add(now, now - arrival.since)
        else:
            self._let_in()

    def answered(self, after_compute_s: float) -> None:
        self._post_compute_s.add(time.perf_counter(), after_compute_s)

    def reachable(self, arrival: Arrival) -> bool:
        if self._device.reachable(self, arrival.deadline, arrival):
            return True
        now = time.perf_counter()
        if self._alone_too_late(now, arrival.deadline - self.post_compute_s(), 1):
            self._refused_alone(now)
        return False

    def pre_queue_s(self) -> float:
        """How long requests recently took from the door to the queue (reading, decoding):
        the 90th percentile of the latest ones (of the last two seconds)."""
        return self._pre_queue_s.p90()

    def post_compute_s(self) -> float:
        """How long answers recently took after their batch ended (post-processing, encoding,
        the event loop's delay): the 90th percentile of the latest ones (of the last two seconds)."""
        return self._post_compute_s.p90()

    async def submit(self, inputs: Inputs, deadline: float, finish: Finish | None = None) -> BatchOutcome:
        """Queue one request (inputs with a leading batch dim, or `Deferred`) and wait for its
        outputs (and the answer `finish` makes of them).

        `deadline` is on the `time.perf_counter()` clock (as every time here: uvloop's
        `loop.time()` only ticks in whole milliseconds). Raises `QueueFull`,
        `DeadlineExceeded`, `Unavailable` (not started, or draining) or `InferenceFailed`.
        """
        if not self.accepting:
            raise Unavailable(f"model {self.model} is not accepting requests (shutting down)")
        loop = asyncio.get_running_loop()
        items, signature = _items_and_signature(inputs)
        if len(self._queue) >= self.config.max_queue_size:
            self._observer.request_failed(self.model, QueueFull.reason)
            raise QueueFull(
                f"the queue of {self.model} is full ({self.config.max_queue_size} requests); retry later",
                self._retry_after_s(),
            )
        now = time.perf_counter()
        if deadline <= now:
            self._observer.request_failed(self.model, DeadlineExceeded.reason)
            raise DeadlineExceeded(f"the deadline passed before the request reached the queue of {self.model}")
        due = deadline - self.post_compute_s()
        working = self._memory.request_bytes(_shapes(items, signature)) if self._memory is not None else 0
        entry = _Pending(inputs, items, signature, now, deadline, due, loop.create_future(), finish, working)
        entry.expiry = loop.call_later(deadline - now, self._expire, entry)
        self._queue.append(entry)
        self._queue_changed()
        try:
            return await entry.future
        except asyncio.CancelledError:
            if self._withdraw(entry):
                self._observer.request_failed(self.model, "cancelled")
            raise

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting; compute everything queued. Whatever is still queued after
        `timeout_s` is answered `Unavailable`; the batch in flight always finishes."""
        self._closing = True
        for room in self._waiting.values():  # waiting at the door: refused, as new requests are
            if not room.done():
                room.set_exception(Unavailable(f"model {self.model} is shutting down; retry later"))
        self._waiting.clear()
        if not self._started:
            return
        self._device.notify()
        try:
            async with asyncio.timeout(timeout_s):
                await self._settled(lambda: not self._queue and not self._in_flight)
        except TimeoutError:
            for entry in list(self._queue):
                self._withdraw(entry)
                self._answer_error(entry, Unavailable(f"{self.model} shut down before this request could run"))
            await self._settled(lambda: not self._in_flight)
        self._device.unregister(self)

    def close(self) -> None:
        """Release the runner threads (after `drain`)."""
        self._device.unregister(self)
        for instance in self._instances:
            instance.executor.shutdown(wait=False, cancel_futures=True)

    async def _settled(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._progress.clear()
            await self._progress.wait()

    # -- what the device scheduler asks (`scheduler.device.Schedulable`) -----------------------

    def has_work(self) -> bool:
        return bool(self._queue) and bool(self._free)

    def oldest_enqueued_at(self) -> float:
        return self._queue[0].enqueued_at

    def seconds_until_due(self, now: float) -> float:
        delay = self.config.max_queue_delay_s
        if delay <= 0 or self._closing or self._compatible_items() >= self.config.max_batch_size:
            return 0.0
        return self._queue[0].enqueued_at + delay - now

    def drop_unreachable(self, free_at: float) -> int:
        planned = self.latency.planned
        hopeless = [entry for entry in self._queue if free_at + planned(entry.items) > entry.due]
        for entry in hopeless:
            if self._withdraw(entry, notify=False):
                needed_ms = 1000 * planned(entry.items)
                left_ms = 1000 * (entry.deadline - time.perf_counter())
                self._answer_error(
                    entry,
                    DeadlineUnreachable(
                        f"{self.model} cannot compute this request by its deadline ({left_ms:.0f} ms left, "
                        f"{needed_ms:.0f} ms of compute needed once the device is free); not computed"
                    ),
                )
        if hopeless:
            if any(self._alone_too_late(entry.enqueued_at, entry.due, entry.items) for entry in hopeless):
                self._refused_alone(time.perf_counter())
            self._queue_changed()
        return len(hopeless)

    def _refused_alone(self, now: float) -> None:
        """The model's own predicted time refused a request (at the door, before its decoding
        or in the queue): a probe may be due. The scheduler decides on changes, and a refusal is
        none: it is told when it could act."""
        self._refused_alone_at = now
        if self._device.has_free_slot() and self.wants_probe():
            self._device.notify()

    def _alone_too_late(self, start: float, due: float, items: int) -> bool:
        """Whether `items` started at `start` on an idle device would, by the model's own
        predicted time, end after `due`: the prediction alone refuses it."""
        return start + self.latency.planned(items) > due

    def plan(self, now: float) -> Plan | None:
        if not self._queue:
            return None
        if self.seconds_until_due(now) > 0:  # the batcher's own delay holds the batch back
            return None
        planned = self.latency.planned
        head = self._queue[0]
        batch, items, due, held = [head], head.items, head.due, head.working_bytes
        for entry in itertools.islice(self._queue, 1, None):
            if entry.signature != head.signature:
                continue
            grown = items + entry.items
            if (
                grown > self.config.max_batch_size
                or now + planned(grown) > min(due, entry.due)
                or not self._fits(held + entry.working_bytes)
            ):
                break
            batch.append(entry)
            items, due, held = grown, min(due, entry.due), held + entry.working_bytes
        return self._plan_of(self._preferred_prefix(batch), now)

    def configured_batch(self, now: float) -> Plan:
        return self._plan_of(self._configured_entries(), now)

    def _plan_of(self, batch: list[_Pending], now: float) -> Plan:
        items = sum(entry.items for entry in batch)
        planned = self.latency.planned(items)
        due = min(entry.due for entry in batch)
        return Plan(batch, items, planned, due - now - planned, batch[0].enqueued_at)

    def pending_work(self, excluding: object = None) -> list[tuple[float, float]]:
        """(due, planned seconds) of every request queued or on its way to the queue (but the
        arrival `excluding`), each costed at its share of the batch the model's pending items
        would make."""
        if not self._queue and not self._arriving:
            return []  # most models, most of the time: asked on every admission of every model
        items = sum(entry.items for entry in self._queue) + len(self._arriving)
        cost = self.item_cost_s(items)
        post = self.post_compute_s()
        work = [(entry.due, entry.items * cost) for entry in self._queue]
        work.extend((deadline - post, cost) for arrival, deadline in self._arriving.items() if arrival is not excluding)
        return work

    def item_cost_s(self, pending_items: int) -> float:
        """Planned seconds per item in a batch of `pending_items` (at most the maximum batch)."""
        size = min(max(pending_items, 1), self.config.max_batch_size)
        return self.latency.planned(size) / size

    def queued_requests(self) -> int:
        return len(self._queue) + len(self._arriving)

    def dispatch(self, requests: Sequence[object], done: Callable[[], None]) -> None:
        """Compute `requests` (entries of this queue) on a free instance in the background; the
        instance is free again after, and `done()` tells the device scheduler."""
        batch = [entry for entry in requests if isinstance(entry, _Pending)]
        for entry in batch:
            entry.computing = True
            self._withdraw(entry, notify=False)
        self._observer.queue_depth_changed(self.model, len(self._queue))  # once for the whole batch
        self._let_in()
        instance = self._free.pop()

        def release() -> None:
            self._free.append(instance)
            done()

        self._track(asyncio.get_running_loop().create_task(self._execute(batch, instance, release)))

    def _track(self, task: asyncio.Task[None]) -> None:
        """Count `task` (a batch or a probe) in flight until it ends (`drain` waits for it)."""
        self._in_flight.add(task)

        def finished(_: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            self._progress.set()

        task.add_done_callback(finished)

    def wants_probe(self) -> bool:
        """Whether a probe should measure the model now: its own predicted time refused or
        dropped a request lately (one that would have been late even on an idle device), no
        batch measured it within the latency model's horizon (so nothing else will correct a
        prediction that is too high), it is not being probed, an instance is free, and the
        wait since its last probe is over. (The device scheduler probes only while no model
        has requests admitted or queued.)"""
        now = time.perf_counter()
        return (
            self._probe_inputs is not None
            and bool(self._free)
            and not self._probing
            and not self._closing
            and now - self._refused_alone_at < HORIZON_S
            and now - self._probed_at >= self._probe_interval_s
            and self.latency.stale()
        )

    def probe(self, done: Callable[[], None]) -> None:
        """Time one run of the probe inputs on a free instance in the background and
        `recalibrate` the latency model with it; `done()` once it has run."""
        assert self._probe_inputs is not None
        instance = self._free.pop()
        self._probing = True
        self._probed_at = time.perf_counter()

        def release() -> None:
            self._free.append(instance)
            self._probing = False
            done()

        self._track(asyncio.get_running_loop().create_task(self._measure(instance, self._probe_inputs, release)))

    async def _measure(self, instance: _Instance, inputs: Tensors, release: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        corrected = False
        try:
            seconds = await loop.run_in_executor(instance.executor, _timed_run, instance.run_batch, inputs)
            corrected = self.latency.recalibrate(batch_items(inputs), seconds)
            logger.info("%s: probed at %.1f ms (requests refused on its predicted time)", self.model, 1000 * seconds)
        except Exception:
            logger.warning("%s: the latency probe failed", self.model, exc_info=True)
        finally:
            self._probed(corrected)
            release()

    def _probed(self, corrected: bool) -> None:
        """The next probe after the horizon when this one corrected the profile; else (it was
        right, or the probe failed) after twice the last wait, up to `MAX_PROBE_INTERVAL_S`:
        a model that really is too slow for its requests' deadlines costs a shrinking share
        of a slot."""
        self._probe_interval_s = HORIZON_S if corrected else min(2 * self._probe_interval_s, MAX_PROBE_INTERVAL_S)

    def stop(self, reason: str) -> None:
        """The device scheduler failed: everything queued is answered, nothing more accepted."""
        for entry in list(self._queue):
            self._withdraw(entry)
            self._answer_error(entry, InferenceFailed(f"the scheduler of {self.model} failed: {reason}"))
        self._closing = True

    # -- batches ------------------------------------------------------------------------------

    def _compatible_items(self) -> int:
        head = self._queue[0].signature
        return sum(entry.items for entry in self._queue if entry.signature == head)

    def _configured_entries(self) -> list[_Pending]:
        head = self._queue[0]
        batch: list[_Pending] = []
        items = held = 0
        for entry in self._queue:
            if entry.signature != head.signature:
                continue
            if batch and (
                items + entry.items > self.config.max_batch_size or not self._fits(held + entry.working_bytes)
            ):
                continue
            batch.append(entry)
            items += entry.items
            held += entry.working_bytes
            if items >= self.config.max_batch_size:
                break
        return self._preferred_prefix(batch)

    def _fits(self, working_bytes: int) -> bool:
        return self._memory is None or working_bytes <= self._memory.limit_bytes

    def _preferred_prefix(self, batch: list[_Pending]) -> list[_Pending]:
        """The longest prefix of `batch` whose items make the largest preferred size it can
        reach (Triton's preferred_batch_size); `batch` itself when none is reached exactly."""
        preferred = self.config.preferred_batch_sizes
        total = sum(entry.items for entry in batch)
        if not preferred or total in preferred:
            return batch
        for size in sorted(preferred, reverse=True):
            if size > total:
                continue
            items = 0
            for count, entry in enumerate(batch, start=1):
                items += entry.items
                if items == size:
                    return batch[:count]
                if items > size:
                    break
        return batch

    async def _execute(
        self, batch: list[_Pending], instance: _Instance, release: Callable[[], None] | None = None
    ) -> None:
        """Compute `batch` on `instance` and answer its requests; `release` frees the instance
        (and the device's slot) as soon as it is no longer needed, before the answers go out."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            outcomes, compute_s, items = await loop.run_in_executor(
                instance.executor, self._compute, instance.run_batch, batch, started
            )
        except Exception as error:
            await self._isolate_failure(batch, instance, error)
            if release is not None:
                release()
            return
        if release is not None:
            release()
        if items:  # else every request's inputs failed: nothing ran to learn from
            self._mean_batch_s += _COMPUTE_TIME_SMOOTHING * (compute_s - self._mean_batch_s)
            self._observer.batch_executed(self.model, items, compute_s, self.latency.predict(items))
            self.latency.observe(items, compute_s, self.latency.predict(items))
        logger.debug("%s: batch of %d items (%d requests) in %.1f ms", self.model, items, len(batch), compute_s * 1000)
        for entry, outcome in zip(batch, outcomes, strict=True):
            self._cancel_expiry(entry)
            if entry.future.done():
                continue
            if isinstance(outcome, BatchOutcome):
                entry.future.set_result(outcome)
                self._observer.request_succeeded(self.model, outcome.queue_s, outcome.compute_s)
            elif isinstance(outcome, ServiceError):  # the request's own fault, found making its answer
                self._answer_error(entry, outcome)
            else:
                logger.error("%s: making a request's answer failed", self.model, exc_info=outcome)
                self._answer_error(entry, InferenceFailed(f"answering a request of {self.model} failed: {outcome}"))

    async def _isolate_failure(self, batch: list[_Pending], instance: _Instance, error: Exception) -> None:
        """A failed batch of several requests runs again one request at a time, so that only a
        request that fails on its own gets an error; a lone request gets its error."""
        if len(batch) > 1:
            logger.warning(
                "%s: batch of %d requests failed (%s); running them one by one", self.model, len(batch), error
            )
            for entry in batch:
                if not entry.future.done():
                    await self._execute([entry], instance)
            return
        (entry,) = batch
        self._cancel_expiry(entry)
        if isinstance(error, InputRejected):
            logger.info("%s: the runner refused a request's input: %s", self.model, error)
            self._answer_error(entry, InvalidInput(f"{self.model} cannot compute this input: {error}"))
        else:
            logger.error("%s: inference failed", self.model, exc_info=error)
            self._answer_error(entry, InferenceFailed(f"inference failed on {self.model}: {error}"))

    def _compute(
        self, run_batch: RunBatch, batch: list[_Pending], started: float
    ) -> tuple[list[BatchOutcome | Exception], float, int]:
        """Runs on an instance's thread: make and concatenate the inputs (`_made`), run in chunks
        of at most max_batch_size (a single request may be larger), concatenate the outputs, then
        each request's outcome with its answer (`_finished`), or why its inputs could not be made;
        the seconds it took and the items it ran."""
        kept, inputs, failures = _made(batch, self.model)
        outcomes: list[BatchOutcome | Exception] = []
        compute_s = time.perf_counter() - started
        if kept:
            step = self.config.max_batch_size
            chunks = [
                run_batch({name: array[i : i + step] for name, array in inputs.items()})
                for i in range(0, batch_items(inputs), step)
            ]
            outputs = _concatenate(chunks)
            compute_s = time.perf_counter() - started
            outcomes = _finished(kept, outputs, started, compute_s)
        items = sum(entry.items for entry in kept)
        if not failures:
            return outcomes, compute_s, items
        made = iter(outcomes)
        return [failures[index] if index in failures else next(made) for index in range(len(batch))], compute_s, items

    # -- bookkeeping ----------------------------------------------------------------------

    def _expire(self, entry: _Pending) -> None:
        waited = time.perf_counter() - entry.enqueued_at
        if entry.computing:
            self._answer_error(
                entry,
                DeadlineExceeded(f"deadline exceeded after {waited:.3f} s while its batch computed on {self.model}"),
            )
        elif self._withdraw(entry):
            self._answer_error(
                entry,
                DeadlineExceeded(f"deadline exceeded after {waited:.3f} s in the queue of {self.model}; not computed"),
            )

    @staticmethod
    def _cancel_expiry(entry: _Pending) -> None:
        if entry.expiry is not None:
            entry.expiry.cancel()

    def _withdraw(self, entry: _Pending, notify: bool = True) -> bool:
        """Take `entry` out of the queue; False if it was not queued. Its deadline timer keeps
        running while it computes. `notify=False`: the caller reports the queue's change."""
        if not entry.computing:
            self._cancel_expiry(entry)
        try:
            self._queue.remove(entry)
        except ValueError:
            return False
        if notify:
            self._queue_changed()
        return True

    def _answer_error(self, entry: _Pending, error: ServiceError) -> None:
        if not entry.future.done():
            entry.future.set_exception(error)
            self._observer.request_failed(self.model, error.reason)

    def _queue_changed(self) -> None:
        self._observer.queue_depth_changed(self.model, len(self._queue))
        self._progress.set()
        self._let_in()
        self._device.notify()

    def _retry_after_s(self) -> float:
        batches_ahead = sum(entry.items for entry in self._queue) / self.config.max_batch_size
        return max(1.0, batches_ahead * self._mean_batch_s / len(self._instances))
