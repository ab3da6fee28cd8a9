"""Cost budgets: a request's working memory is estimated from its headers and admitted before
any decoding, so excess turns into 413 / 503 instead of gigabytes, and heavy requests run on
threads of their own so that they never delay light ones.

The cost is the request's decoding (body, images, arrays) plus the model's predicted peak
working memory for its items at the size the model runs them (`contract.working_bytes`, from
the memory model measured at export: self-attention's grows with the square of the positions).
v2 requests add the model's part once their shapes are parsed (`admit_more`), before their batch
is queued. Requests admitted together form the batches, so a batch is within the budget too:
each request holds its items' share (a batch measured less than the sum of its items).

- Over `request_memory_mb` on its own: 413 (no retry can help).
- Not fitting beside the requests in flight (`server_memory_mb`): 503 + Retry-After. A request
  is always admitted when nothing else is in flight, so a lone heavy request is never refused
  for the budget alone.
- Over `heavy_request_mb`: decoding and post-processing run on the heavy worker threads.
After a burst of heavy work, once nothing is in flight, freed memory is returned to the system.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from easerve.service.errors import Overloaded, PayloadTooLarge
from easerve.service.settings import Settings

logger = logging.getLogger(__name__)

MB = 1024 * 1024


def megabytes(count: int) -> str:
    return f"{count / MB:.0f} MB"


class Ticket:
    """A request's admitted cost; returned to the budget when the request and every worker job
    it started have finished (`hold` / `release` count them)."""

    def __init__(self, budget: MemoryBudget, cost: int) -> None:
        self.cost = cost  # all it holds of the budget
        self._budget = budget
        self._holders = 1

    def hold(self) -> None:
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._budget.give_back(self.cost)


class MemoryBudget:
    """The server-wide budget of estimated working memory; used from the event loop only."""

    def __init__(
        self, per_request_bytes: int, server_bytes: int, trim_after_bytes: int, on_idle: Callable[[], None]
    ) -> None:
        self.per_request_bytes = per_request_bytes
        self.server_bytes = server_bytes
        self.in_flight_bytes = 0
        self._trim_after_bytes = trim_after_bytes
        self._admitted_since_trim = 0
        self._on_idle = on_idle

    def admit(self, cost: int, what: str) -> Ticket:
        """A ticket for `cost` bytes; PayloadTooLarge over the per-request budget, Overloaded
        when it does not fit beside the requests in flight."""
        self._check(cost, self.in_flight_bytes, what)
        self._take(cost)
        return Ticket(self, cost)

    def admit_more(self, ticket: Ticket, extra: int, what: str) -> None:
        """Add `extra` bytes to an admitted `ticket` (a cost known only once the request was
        parsed), checked as if the whole were admitted at once beside the others in flight."""
        self._check(ticket.cost + extra, self.in_flight_bytes - ticket.cost, what)
        self._take(extra)
        ticket.cost += extra

    def _check(self, cost: int, others: int, what: str) -> None:
        if cost > self.per_request_bytes:
            raise PayloadTooLarge(
                f"{what} needs an estimated {megabytes(cost)} of working memory; the limit per request is "
                f"{megabytes(self.per_request_bytes)} (send fewer or smaller inputs)"
            )
        if others and others + cost > self.server_bytes:
            raise Overloaded(
                f"the server is busy with {megabytes(others)} of work in flight; {what} needs "
                f"{megabytes(cost)} more than the {megabytes(self.server_bytes)} budget allows; retry later",
                retry_after_s=1.0,
            )

    def _take(self, cost: int) -> None:
        self.in_flight_bytes += cost
        self._admitted_since_trim += cost

    def give_back(self, cost: int) -> None:
        self.in_flight_bytes -= cost
        if self.in_flight_bytes == 0 and self._admitted_since_trim >= self._trim_after_bytes:
            self._admitted_since_trim = 0
            self._on_idle()


@dataclass(frozen=True)
class WorkerPools:
    """Threads for decoding and pre-/post-processing, by cost class."""

    light: ThreadPoolExecutor
    heavy: ThreadPoolExecutor
    heavy_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerPools:
        return cls(
            light=ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="easerve-worker"),
            heavy=ThreadPoolExecutor(max_workers=settings.heavy_workers, thread_name_prefix="easerve-heavy"),
            heavy_bytes=int(settings.heavy_request_mb * MB),
        )

    def for_cost(self, cost: int) -> Executor:
        return self.heavy if cost > self.heavy_bytes else self.light

    def shutdown(self) -> None:
        self.light.shutdown(wait=False, cancel_futures=True)
        self.heavy.shutdown(wait=False, cancel_futures=True)


def memory_budget(settings: Settings, pools: WorkerPools, release: Callable[[], None]) -> MemoryBudget:
    """The budget of `settings`; after heavy work, `release` runs on a heavy thread once idle."""
    return MemoryBudget(
        per_request_bytes=int(settings.request_memory_mb * MB),
        server_bytes=int(settings.server_memory_mb * MB),
        trim_after_bytes=pools.heavy_bytes,
        on_idle=lambda: pools.heavy.submit(release),
    )
