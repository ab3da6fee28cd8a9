"""The model process's side of the channel: its models' batchers, served to the HTTP workers.

One connection per worker, on a Unix socket. A worker first names its arena (`hello`), then asks
for a model's description (`describe`: answered once the model is ready, which is what makes the
worker ready) and sends requests (`infer`). Each request is submitted to the model's own
`DynamicBatcher` with its inputs mapped from the worker's arena, so requests from every worker
meet in one queue; its outputs are written back after its inputs when its region has room (else
in the answer's payload). Errors are answers (`error_to_wire`). A worker that goes away has its
requests withdrawn: nothing is written into its arena after that, and the arena is retired by
the supervisor.

Model control is this process's (`ModelControl`): a worker forwards `load`, `unload` and `index`,
and every worker is told (`changed`, a frame without an id, numbered) when another version of a
model serves or it is unloaded, so each follows (`frontend.followed_control`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from easerve.service.errors import InferenceFailed, InvalidInput, ServiceError, Unavailable, error_to_wire
from easerve.service.frontend.wire import Header, encode_frame, pack_tensors, packed_size, read_frame, tensor_views
from easerve.service.model_control import ModelControl
from easerve.service.repository import ModelRepository

logger = logging.getLogger(__name__)

# How often `describe` looks whether a loading model is ready yet.
READY_POLL_S = 0.05
_CONTROL_OPS = frozenset({"load", "unload"})


class ModelHost:
    def __init__(
        self, repository: ModelRepository, control: ModelControl, arena_buffer: Callable[[str], memoryview]
    ) -> None:
        """`arena_buffer(name)`: the mapping of a worker's arena (KeyError for an unknown one)."""
        self._repository = repository
        self._control = control
        self._arena_buffer = arena_buffer
        self._server: asyncio.AbstractServer | None = None
        self._workers: set[asyncio.StreamWriter] = set()
        self._control_tasks: set[asyncio.Task[None]] = set()
        self._last_change: dict[str, int] = {}  # each model's latest change, numbered in order
        control.on_change = self._changed

    async def start(self, path: str) -> None:
        """Listen on the Unix socket `path`."""
        self._server = await asyncio.start_unix_server(self._serve_worker, path=path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve_worker(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arena: memoryview | None = None
        requests: set[asyncio.Task[None]] = set()
        try:
            while True:
                header, payload = await read_frame(reader)
                if header["op"] == "hello":
                    arena = self._arena_buffer(header["arena"]) if header.get("arena") else None
                    self._catch_up(writer)
                    continue
                task = asyncio.get_running_loop().create_task(self._answer(header, payload, arena, writer))
                # A load or unload goes on if the worker that asked goes away: the others follow it.
                tasks = self._control_tasks if header["op"] in _CONTROL_OPS else requests
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker exited or was killed
        finally:
            for task in requests:
                task.cancel()  # withdrawn from the queue; never written into the arena
            if requests:
                logger.warning("an HTTP worker went away with %d request(s) in flight", len(requests))
            self._workers.discard(writer)
            writer.close()

    async def _answer(
        self, header: Header, payload: bytes, arena: memoryview | None, writer: asyncio.StreamWriter
    ) -> None:
        reply: Header = {"id": header["id"]}
        out = bytearray()
        try:
            op = header["op"]
            if op == "describe":
                reply |= await self._describe(header["model"], header.get("wait", True))
            elif op in _CONTROL_OPS:
                await (self._control.load if op == "load" else self._control.unload)(header["model"])
                reply["change"] = self._last_change.get(header["model"], 0)
            elif op == "index":
                reply["entries"] = [vars(entry) for entry in await self._control.index(header["ready"])]
            else:
                fields, out = await self._infer(header, payload, arena)
                reply |= fields
        except ServiceError as error:
            reply["error"] = error_to_wire(error)
        except ValueError as error:  # batch_items: the worker checks this first
            reply["error"] = error_to_wire(InvalidInput(str(error)))
        except Exception as error:  # noqa: BLE001 - answered, as one process answers it (500)
            logger.error("%s for an HTTP worker failed", header["op"], exc_info=error)
            reply["error"] = error_to_wire(InferenceFailed(f"{header['op']} failed: {type(error).__name__}: {error}"))
        if not writer.is_closing():
            writer.write(encode_frame(reply, out))
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def _describe(self, name: str, wait: bool) -> Header:
        """What a worker serves of `name`: its state, and the version served (once it has
        loaded, with `wait`); Unavailable when it failed to load."""
        model = self._repository.get(name)
        while wait and model.state == "loading":
            await asyncio.sleep(READY_POLL_S)
        if wait and model.state == "failed":
            raise Unavailable(f"model {name} is {model.state}: {model.error}")
        return {
            "state": model.state,
            "directory": str(model.files.directory),
            "version": model.version,
            "variant": model.files.variant_name,
            "variant_reason": model.variant_reason,
            "backend": model.backend,
        }

    def _catch_up(self, writer: asyncio.StreamWriter) -> None:
        """A worker that connects (a new one, or one started again) first hears of every change
        so far, then of each one as it happens."""
        for name, change in sorted(self._last_change.items(), key=lambda item: item[1]):
            writer.write(_changed_frame(name, change))
        self._workers.add(writer)

    def _changed(self, name: str) -> None:
        """Tell every worker that `name` changed (they follow it in order of the numbers)."""
        change = max(self._last_change.values(), default=0) + 1
        self._last_change[name] = change
        frame = _changed_frame(name, change)
        for writer in self._workers:
            if not writer.is_closing():
                writer.write(frame)

    async def _infer(self, header: Header, payload: bytes, arena: memoryview | None) -> tuple[Header, bytearray]:
        region = header.get("region")
        source = arena if region is not None and arena is not None else payload
        inputs = tensor_views(header["tensors"], source)
        batcher = self._repository.get(header["model"]).ready_batcher()
        outcome = await batcher.submit(inputs, time.perf_counter() + header["budget_s"])
        fields: Header = {"queue_s": outcome.queue_s, "compute_s": outcome.compute_s, "batch_size": outcome.batch_size}
        needed = packed_size(outcome.outputs)
        if region is not None and arena is not None and header["inputs_bytes"] + needed <= region[1]:
            fields["outputs"] = pack_tensors(outcome.outputs, arena, region[0] + header["inputs_bytes"])
            return fields, bytearray()
        out = bytearray(needed)
        fields["outputs"] = pack_tensors(outcome.outputs, memoryview(out), 0)
        fields["inline"] = True
        return fields, out


def _changed_frame(name: str, change: int) -> bytes:
    return encode_frame({"op": "changed", "model": name, "change": change})
