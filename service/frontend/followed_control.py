"""Model control in an HTTP worker of `--http-workers`: the model process loads, reloads and
unloads (its `ModelControl`, asked over the channel), and each worker's repository follows what
that process serves, so that a worker checks requests against the version they will be computed
by and reports it.

A worker follows a model when the model process says it changed (`changed`, numbered in the
order the changes happened), and the worker that asked for a change before it answers: the
answer to `load` or `unload` comes once that worker serves the new state. In `poll` mode the
model process alone scans the folders.
"""

from __future__ import annotations

import asyncio
import logging

from easerve.service.frontend.channel import ModelChannel
from easerve.service.frontend.shared_batcher import attach, described_model
from easerve.service.model_control import ModelControl, RepositoryEntry
from easerve.service.model_loading import ModelLoader
from easerve.service.repository import ModelRepository, ServedModel
from easerve.service.settings import Settings

logger = logging.getLogger(__name__)


class FollowedControl(ModelControl):
    def __init__(
        self, repository: ModelRepository, settings: Settings, loader: ModelLoader, channel: ModelChannel
    ) -> None:
        super().__init__(repository, settings, loader)
        self._channel = channel
        self._followed: dict[str, int] = {}  # the number of the last change followed, per model
        self._following: set[asyncio.Task[None]] = set()
        channel.on_change = self._changed

    async def index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        answer = await self._channel.ask({"op": "index", "ready": ready_only})
        return [RepositoryEntry(**entry) for entry in answer["entries"]]

    async def load(self, name: str) -> ServedModel:
        answer = await self._channel.ask({"op": "load", "model": name})
        await self.follow(name, answer["change"])
        return self._repository.get(name)

    async def unload(self, name: str) -> None:
        answer = await self._channel.ask({"op": "unload", "model": name})
        await self.follow(name, answer["change"])

    async def poll_forever(self) -> None:
        """Nothing: the model process scans the folders and says what changed."""

    def _changed(self, name: str, change: int) -> None:
        task = asyncio.get_running_loop().create_task(self._follow_told(name, change))
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    async def _follow_told(self, name: str, change: int) -> None:
        try:
            await self.follow(name, change)
        except Exception as error:  # noqa: BLE001 - the next change of the model is followed again
            logger.error("%s changed in the model process, but this worker could not follow: %s", name, error)

    async def follow(self, name: str, change: int) -> None:
        """Serve `name` as the model process does now, unless change number `change` (or a
        later one) was followed already."""
        async with self._lock(name):
            if self._followed.get(name, 0) >= change:
                return
            described = await self._channel.describe(name, wait=False)
            served = self._served(name)
            if described["state"] == "ready":
                model = await asyncio.to_thread(described_model, described, self._settings)
                attach(model, described, self._channel)
                model.state = "ready"
                previous = self._repository.install(model)
                if previous is not None and previous.state in ("ready", "loading"):
                    await self._retire(previous, successor=model)
            elif served is not None and served.state == "ready":
                await self._retire(served, successor=None)
                served.state = "unloaded"
            self._followed[name] = change
