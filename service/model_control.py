"""A live model repository: load, reload and unload models while the server runs (Triton's
model repository extension and its model control modes).

Loading a model (again) reads its newest version from the weights folders, builds and warms up
its runners beside the version being served, and only then swaps it in; the old version drains
(everything it queued is answered) and is released. Requests prepared for the old version go to
the new one when it takes the same inputs. A failed load leaves the old version serving and is
reported in the index, as Triton does. Unloading drains the model and releases it; its requests
then get 503 until it is loaded again.

Modes (`model_control`): `none` serves the models found at start; `explicit` also takes
`/v2/repository/models/{m}/load|unload`; `poll` rescans the folders every `repository_poll_s`
and loads what is new or changed, unloads what is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from easerve.service.errors import BadRequest, LoadFailed, NotFound, ServiceError
from easerve.service.model_config import parse_overrides, serving_config
from easerve.service.model_files import ModelFiles, scan_models
from easerve.service.model_loading import ModelLoader
from easerve.service.repository import ModelRepository, ServedModel
from easerve.service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepositoryEntry:
    """One model of the repository index, as Triton reports it."""

    name: str
    version: str
    state: str  # READY, LOADING or UNAVAILABLE
    reason: str


def _fingerprint(files: ModelFiles) -> tuple[int, str, float]:
    """What changes when a model folder gets a new version, new graphs or a new serving file."""
    serving = files.directory / "serving.json"
    return files.version, files.manifest.model_dump_json(), serving.stat().st_mtime if serving.is_file() else 0.0


def configured_model(files: ModelFiles, settings: Settings) -> ServedModel:
    """`files` as a model to serve, with its serving configuration (not loaded)."""
    overrides = parse_overrides(settings.model_overrides).get(files.name, {})
    return ServedModel(
        files, serving_config(files.name, files.directory, files.manifest.max_batch_size, settings, overrides)
    )


class ModelControl:
    def __init__(self, repository: ModelRepository, settings: Settings, loader: ModelLoader) -> None:
        self._repository = repository
        self._settings = settings
        self._loader = loader
        self._locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, str] = {}
        self._loading: set[str] = set()
        # Called with a model's name once another version of it serves or it is unloaded (the
        # `--http-workers` model process tells its workers).
        self.on_change: Callable[[str], None] = lambda name: None

    @property
    def mode(self) -> str:
        return self._settings.model_control

    def check_explicit(self) -> None:
        """BadRequest unless models may be loaded and unloaded on request."""
        if self.mode != "explicit":
            raise BadRequest(
                f"model control mode is {self.mode!r}: loading and unloading on request needs --model-control explicit"
            )

    async def index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        """Every model in the weights folders or served, with its state (READY, LOADING,
        UNAVAILABLE and why)."""
        on_disk = await asyncio.to_thread(scan_models, self._settings.weights_dirs)
        entries = []
        for name in sorted(set(on_disk) | set(self._repository.names())):
            entry = self._entry(name, on_disk.get(name))
            if entry.state == "READY" or not ready_only:
                entries.append(entry)
        return entries

    def _entry(self, name: str, files: ModelFiles | None) -> RepositoryEntry:
        served = self._served(name)
        version = str(served.version if served else files.version if files else "")
        if name in self._loading:
            return RepositoryEntry(name, version, "LOADING", "")
        if served is not None and served.state == "ready":
            return RepositoryEntry(name, version, "READY", self._failures.get(name, ""))
        reason = self._failures.get(name) or (f"model is {served.state}" if served else "not loaded")
        return RepositoryEntry(name, version, "UNAVAILABLE", reason)

    def _served(self, name: str) -> ServedModel | None:
        return self._repository.get(name) if name in self._repository.names() else None

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def load(self, name: str) -> ServedModel:
        """Load the newest version of `name` (again), warm it up, then swap it in; NotFound when
        no folder holds it, LoadFailed (the old version still serving) when it cannot load."""
        await self._on_disk(name)  # an unknown name costs one scan, off the loop, and leaves nothing behind
        async with self._lock(name):
            files = await self._on_disk(name)  # the newest version, now that no other load of it runs
            self._loading.add(name)
            try:
                model = await self._prepare(files)
            except Exception as error:
                self._failures[name] = f"load of version {files.version} failed: {error}"
                logger.error("%s: %s", name, self._failures[name])
                raise LoadFailed(f"failed to load {name!r}: {error}") from None
            finally:
                self._loading.discard(name)
            self._failures.pop(name, None)
            previous = self._repository.install(model)
            logger.info("%s: version %d serving (%s)", name, model.version, model.backend)
            self.on_change(name)
            if previous is not None and previous.state in ("ready", "loading"):
                await self._retire(previous, successor=model)
            return model

    async def _on_disk(self, name: str) -> ModelFiles:
        """The files of `name` in the weights folders (scanned on a thread); NotFound if none."""
        files = (await asyncio.to_thread(scan_models, self._settings.weights_dirs)).get(name)
        if files is None:
            raise NotFound(f"no model {name!r} in {', '.join(map(str, self._settings.weights_dirs))}")
        return files

    async def _prepare(self, files: ModelFiles) -> ServedModel:
        model = configured_model(files, self._settings)
        await self._loader(model)
        model.state = "ready"
        return model

    async def unload(self, name: str) -> None:
        """Drain `name` and release it; its requests get 503 until it is loaded again."""
        self._repository.get(name)  # NotFound for a name never served, before any lock is made for it
        async with self._lock(name):
            model = self._repository.get(name)
            if model.state == "ready":
                await self._retire(model, successor=None)
            model.state = "unloaded"
            self.on_change(name)

    async def _retire(self, model: ServedModel, successor: ServedModel | None) -> None:
        model.replaced_by = successor
        await model.retire(self._settings.drain_timeout_s, "stopped" if successor is not None else "unloaded")

    async def poll_forever(self) -> None:
        """`poll` mode: rescan every `repository_poll_s`; load what is new or changed, unload
        what is gone. A failed load is retried only once its folder changes again; a scan that
        fails (a folder half written or being removed) is tried again at the next poll."""
        seen = {name: _fingerprint(self._repository.get(name).files) for name in self._repository.names()}
        while True:
            await asyncio.sleep(self._settings.repository_poll_s)
            try:
                await self._poll(seen)
            except Exception as error:  # noqa: BLE001 - polling goes on
                logger.error("poll: %s: %s (tried again at the next poll)", type(error).__name__, error)

    async def _poll(self, seen: dict[str, tuple[int, str, float]]) -> None:
        on_disk = await asyncio.to_thread(scan_models, self._settings.weights_dirs)
        for name, files in on_disk.items():
            fingerprint = _fingerprint(files)
            if seen.get(name) != fingerprint:
                seen[name] = fingerprint
                try:
                    await self.load(name)
                except ServiceError as error:
                    logger.error("poll: %s", error.message)
        for name in set(self._repository.names()) - set(on_disk):
            if self._repository.get(name).state == "ready":
                logger.info("poll: %s is gone from the weights folders; unloading", name)
                await self.unload(name)
            seen.pop(name, None)
