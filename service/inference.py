"""`InferenceContext`: one inference request's model, deadline, cost and clock, and the ways its
handler waits (reading the body, worker threads for CPU work, the model's batcher for compute),
each bounded by the request's deadline.

A request first passes its model's door (`begin`): the device scheduler may refuse it there,
from its deadline and the work ahead of it, before a byte of its body is read. It is light
until it is admitted with its estimated cost (`admit`: decoding and the model's predicted working
memory, see `admission`): from then on its CPU work runs on the worker threads of its cost
class, and its cost is held in the server's memory budget until the request and every worker
job it started have finished (`finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from easerve.service.admission import MemoryBudget, Ticket, WorkerPools
from easerve.service.batcher import UNCOUNTED, Arrival, BatchOutcome, Finish, Inputs, Tensors
from easerve.service.body_limit import BodyTimeout
from easerve.service.contract import InputLimits
from easerve.service.deadline import Deadline
from easerve.service.errors import ClientClosedRequest, DeadlineExceeded, DeadlineUnreachable, Unavailable
from easerve.service.json_answers import json_bytes
from easerve.service.repository import ServedModel

P = ParamSpec("P")
R = TypeVar("R")

# A request whose answer comes from at most this many times the model's own input (pixels,
# points, generated images) has it made on the runner's thread right after its batch
# (`InferenceContext.answer`): bounded work, cheaper than the hop to a worker and back; a larger
# one on a worker, where it cannot hold up the model's next batch.
SMALL_ANSWER_MODEL_INPUTS = 4


@dataclass(eq=False)
class InferenceContext:
    model: ServedModel
    # On time.perf_counter(): uvloop's loop.time() only ticks in whole milliseconds, too coarse
    # for the reported timings.
    started: float  # when the handler began
    deadline: Deadline
    pools: WorkerPools
    budget: MemoryBudget
    limits: InputLimits
    on_begin: Callable[[], None] | None = None
    on_finish: Callable[[], None] | None = None
    ticket: Ticket | None = None
    # The part of its admitted cost its worker threads spend (decoding, answers), which picks
    # their pool.
    work_bytes: int = 0
    # Its input costs its workers more than its size says (images packed with chunks): its
    # worker jobs run on the heavy pool, where they delay only other heavy work.
    costly: bool = False
    # Admitted at the door (`door.AdmissionDoor`) before the route ran, or by `begin`.
    arrival: Arrival | None = None
    computed_at: float | None = None  # when its batch ended
    # Returns once the client has closed the connection (after the body was read), if known.
    client_gone: Callable[[], Awaitable[None]] | None = None

    def with_timeout(self, timeout_s: float) -> None:
        """Replace the deadline with `timeout_s` from the start (a protocol's own timeout field)."""
        self.deadline = Deadline(self.started + timeout_s)
        if self.arrival is not None:
            self.arrival.deadline = self.deadline.at

    async def __aenter__(self) -> InferenceContext:
        """The one way a handler holds a request: `async with context:` begins it and finishes it
        however the handler leaves."""
        self.begin()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.finish()

    def begin(self) -> None:
        """The handler starts: admitted at its model's door (QueueFull / Overloaded when the
        device scheduler foresees it cannot be on time), then counted as in flight until
        `finish`."""
        if self.arrival is None:
            self.arrival = _arrival(self.model, self.deadline.at)
        if self.on_begin is not None:
            self.on_begin()
            self.on_begin = None

    def admit(self, cost: int, what: str, *, model_bytes: int = 0) -> None:
        """Hold `cost` bytes of worker-side work (decoding, answers) and `model_bytes` of the
        model's working memory in the memory budget for this request, or that much more once it
        holds some (PayloadTooLarge / Overloaded, see `admission`); its worker jobs move to the
        pool of its worker-side cost class (the model's memory is spent on the runner, not on a
        worker)."""
        if self.ticket is None:
            self.ticket = self.budget.admit(cost + model_bytes, what)
        else:
            self.budget.admit_more(self.ticket, cost + model_bytes, what)
        self.work_bytes += cost

    def finish(self) -> None:
        """The handler is done: the request's cost goes back once its worker jobs are done too.
        Idempotent."""
        if self.arrival is not None:
            self.arrival.leave()
            if self.computed_at is not None:
                self.arrival.answered(time.perf_counter() - self.computed_at)
        if self.ticket is not None:
            self.ticket.release()
            self.ticket = None
        if self.on_finish is not None and self.on_begin is None:  # begun, not yet finished
            self.on_finish()
            self.on_finish = None

    async def read(self, body: Awaitable[R]) -> R:
        """Await the request's `body` (I/O on the event loop); BodyTimeout (408, the connection
        closed) if it has not arrived by the deadline: the client was too slow to send it."""
        try:
            async with asyncio.timeout(max(self.deadline.remaining_s(), 0.0)):
                return await body
        except TimeoutError:
            raise BodyTimeout(
                f"the request body was not received by the request's deadline "
                f"({self.deadline.at - self.started:g} s after it began)"
            ) from None

    async def offload(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run CPU work on a worker thread of the request's cost class; answered 504 at the
        deadline. Work that has not started by then never runs; work that has goes on (long
        work checks the deadline and stops), and the request's cost stays held until it ends."""
        self.deadline.check("waiting for a worker thread")
        self.check_reachable()
        loop = asyncio.get_running_loop()
        executor = self.pools.heavy if self.costly else self.pools.for_cost(self.work_bytes)
        job = executor.submit(functools.partial(function, *args, **kwargs))
        if self.ticket is not None:
            ticket = self.ticket
            ticket.hold()
            job.add_done_callback(lambda _: _on_loop(loop, ticket.release))
        return await self._by_deadline(asyncio.wrap_future(job, loop=loop), "decoding or post-processing")

    def check_reachable(self) -> None:
        """DeadlineUnreachable (504) when, admitted at the door but not queued yet, the request
        can no longer be on time after the device's work due before it (checked before it is
        decoded)."""
        if self.arrival is not None and not self.arrival.reachable():
            raise DeadlineUnreachable(
                f"{self.model.name} can no longer answer this request by its deadline (the work ahead of it on the "
                "device would take longer); not decoded"
            )

    def batched_here(self) -> bool:
        """Whether the model's batches run in this process (its batcher takes `Deferred` inputs);
        Unavailable when the model is not ready."""
        return self.model.ready_batcher().takes_deferred

    async def infer(self, inputs: Inputs, finish: Finish | None = None) -> BatchOutcome:
        """Queue `inputs` (batch first, in the model's contract: built by the server, or a client's
        checked where they were decoded) on the model's batcher and wait for the outputs (and the
        answer `finish` makes of them)."""
        if self.arrival is not None:
            self.arrival.leave(queued=True)
        submitted = time.perf_counter()
        batcher = self.model.ready_batcher()
        if self.client_gone is None:
            outcome = await batcher.submit(inputs, self.deadline.at, finish)
        else:
            outcome = await self._unless_the_client_leaves(lambda: batcher.submit(inputs, self.deadline.at, finish))
        self.computed_at = submitted + outcome.queue_s + outcome.compute_s
        return outcome

    async def answer(self, inputs: Inputs, finish: Finish, *, on_the_runner: bool = True) -> object:
        """The answer `finish` makes of the outputs of `inputs`: on the runner's thread right
        after the batch, or (`on_the_runner=False`: a large or costly answer) on a worker."""
        if on_the_runner:
            return (await self.infer(inputs, finish)).answer
        outcome = await self.infer(inputs)
        return (await self.offload(finish.applied, outcome)).answer

    async def _unless_the_client_leaves(self, submit: Callable[[], Awaitable[BatchOutcome]]) -> BatchOutcome:
        """`submit()` awaited in this task (so the request is queued at once, as without the
        watch), withdrawn (never computed, if it is still queued) with ClientClosedRequest when
        the client closes its connection first: nobody would read the answer."""
        assert self.client_gone is not None
        task = asyncio.current_task()
        assert task is not None
        gone = asyncio.ensure_future(self.client_gone())
        left = False
        watching = True

        def interrupt(watch: asyncio.Future[None]) -> None:
            nonlocal left
            # A callback already scheduled when `submit` returned must not cancel what follows;
            # a watch that failed (rather than saw the disconnect) says nothing of the client.
            if watching and not watch.cancelled() and watch.exception() is None:
                left = True
                task.cancel()

        gone.add_done_callback(interrupt)
        try:
            return await submit()
        except asyncio.CancelledError:
            if left and task.uncancel() == 0:
                raise ClientClosedRequest("the client closed the connection while its request waited") from None
            raise
        finally:
            watching = False
            gone.remove_done_callback(interrupt)
            gone.cancel()

    def answer_with(
        self, fields: Callable[[Tensors], dict[str, object]], prepare=None, *, light: bool = False
    ) -> Finish:
        """A `Finish` whose answer is this request's whole JSON body (bytes): the common fields
        (`response_fields`) and `fields(outputs)`, made and encoded where the batch ran.
        `prepare`: the batch-wide step the outputs go through first; `light`: see `Finish`."""

        def answer(outcome: BatchOutcome) -> bytes:
            return json_bytes({**self.response_fields(outcome), **fields(outcome.outputs)})

        return Finish(answer, prepare, light)

    async def _by_deadline(self, awaitable: Awaitable[R], what: str) -> R:
        try:
            async with asyncio.timeout(max(self.deadline.remaining_s(), 0.0)):
                return await awaitable
        except TimeoutError:
            raise DeadlineExceeded(f"deadline exceeded while {what}") from None

    def response_fields(self, outcome: BatchOutcome) -> dict[str, object]:
        """The fields every inference response starts with (`schemas.InferenceResponse`)."""
        total_s = time.perf_counter() - self.started
        return {
            "model": self.model.name,
            "attention": self.model.manifest.attention,
            "backend": self.model.backend,
            "batch_size": outcome.batch_size,
            "timings": {
                "queue_ms": outcome.queue_s * 1000,
                "compute_ms": outcome.compute_s * 1000,
                "total_ms": total_s * 1000,
            },
        }


def _arrival(model: ServedModel, deadline: float) -> Arrival:
    """The request admitted at `model`'s batcher; a model that is not ready answers later, when
    the request reaches it, as it always has."""
    try:
        batcher = model.ready_batcher()
    except Unavailable:
        return UNCOUNTED
    return batcher.expect(deadline)


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Run `callback` on `loop` (from a worker thread); nothing once the loop has closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)
