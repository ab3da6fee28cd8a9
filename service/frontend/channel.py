"""An HTTP worker's connection to the model process (`model_host`): requests out, answers
matched back to them by id.

A request's tensors go into a region of the worker's arena with room after them for its outputs
(or, when the arena has no such room, into the frame itself); the region is given back when the
answer arrives, whether or not its request still waits for it, so the model process never writes
into a region that was handed out again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from easerve.service.batcher import BatchOutcome, Tensors
from easerve.service.errors import DeadlineExceeded, ServiceError, Unavailable, error_from_wire
from easerve.service.frontend.arena import Region, WorkerArena
from easerve.service.frontend.wire import Header, encode_frame, pack_tensors, packed_size, read_frame, tensor_views

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Waiting:
    future: asyncio.Future[tuple[Header, Tensors]]
    region: Region | None


class ModelChannel:
    def __init__(self, path: str, arena: WorkerArena | None, on_lost: Callable[[], None]) -> None:
        """Connects to the model process's socket `path` on first use; `on_lost` is called if
        the model process goes away (the worker then has nothing to serve)."""
        self._path = path
        self._arena = arena
        self._on_lost = on_lost
        # Called with a model's name and the change's number when the model process says that
        # another version of it serves or it was unloaded.
        self.on_change: Callable[[str, int], None] = lambda name, change: None
        self._connecting: asyncio.Task[asyncio.StreamWriter] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._waiting: dict[int, _Waiting] = {}
        self._ids = itertools.count()
        self._lost = False

    async def describe(self, model: str, wait: bool = True) -> Header:
        """The model's state, version folder, variant and backend in the model process: once it
        is ready (`wait`), or now."""
        return await self.ask({"op": "describe", "model": model, "wait": wait})

    async def ask(self, header: Header) -> Header:
        """The model process's answer to a request without tensors (describe, model control);
        raises what it raised."""
        answer, _ = await self._send(header, bytearray(), None)
        return answer

    async def infer(self, model: str, inputs: Tensors, deadline: float, output_bytes: int) -> BatchOutcome:
        """Queue `inputs` on the model's batcher in the model process, with the time left to
        `deadline` (perf_counter) as its budget; raises what that batcher raised."""
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise DeadlineExceeded(f"the deadline passed before the request reached the queue of {model}")
        inputs_bytes = packed_size(inputs)
        header: Header = {"op": "infer", "model": model, "budget_s": remaining, "inputs_bytes": inputs_bytes}
        region = self._arena.reserve(inputs_bytes + output_bytes) if self._arena is not None else None
        payload = bytearray()
        if region is not None:
            header["region"] = [region.offset, region.size]
            header["tensors"] = pack_tensors(inputs, self._arena.buffer, region.offset)
        else:
            payload = bytearray(inputs_bytes)
            header["tensors"] = pack_tensors(inputs, memoryview(payload), 0)
        answer, outputs = await self._send(header, payload, region, deadline)
        return BatchOutcome(outputs, answer["queue_s"], answer["compute_s"], answer["batch_size"])

    async def _send(
        self, header: Header, payload: bytearray, region: Region | None, deadline: float | None = None
    ) -> tuple[Header, Tensors]:
        try:
            writer = await self._writer()
        except BaseException:
            self._give_back(region)
            raise
        request_id = next(self._ids)
        future: asyncio.Future[tuple[Header, Tensors]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = _Waiting(future, region)
        writer.write(encode_frame({**header, "id": request_id}, payload))
        await writer.drain()
        timeout = None if deadline is None else max(deadline - time.perf_counter(), 0.0)
        try:
            # The answer still comes after the caller stops waiting, and gives the region back.
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise DeadlineExceeded(f"deadline exceeded while waiting for {header.get('model')}") from None
        finally:
            future.cancel()  # nobody waits for it any more: `_settle` only gives the region back

    async def _writer(self) -> asyncio.StreamWriter:
        if self._lost:
            raise Unavailable("the model process has gone")
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_unix_connection(self._path)
        writer.write(encode_frame({"op": "hello", "arena": self._arena.name if self._arena else None}))
        self._reading = asyncio.get_running_loop().create_task(self._read_answers(reader))
        return writer

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, payload = await read_frame(reader)
                self._settle(header, payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self._lost = True
        logger.error("the model process has gone; %d request(s) unanswered", len(self._waiting))
        for waiting in self._waiting.values():
            self._give_back(waiting.region)
            if not waiting.future.done():
                waiting.future.set_exception(Unavailable("the model process has gone"))
        self._waiting.clear()
        self._on_lost()

    def _settle(self, header: Header, payload: bytes) -> None:
        if "id" not in header:  # not an answer: the model process says a model changed
            self.on_change(header["model"], header["change"])
            return
        waiting = self._waiting.pop(header["id"])
        outcome: tuple[Header, Tensors] | ServiceError
        try:
            if "error" in header:
                outcome = error_from_wire(header["error"])
            else:
                source = payload if header.get("inline") or self._arena is None else self._arena.buffer
                # Copied out: the region is handed out again at once.
                outputs = {
                    name: np.array(view) for name, view in tensor_views(header.get("outputs", []), source).items()
                }
                outcome = (header, outputs)
        finally:
            self._give_back(waiting.region)
        if waiting.future.done():
            return
        if isinstance(outcome, ServiceError):
            waiting.future.set_exception(outcome)
        else:
            waiting.future.set_result(outcome)

    def _give_back(self, region: Region | None) -> None:
        if region is not None and self._arena is not None:
            self._arena.release(region)
