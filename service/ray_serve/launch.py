"""`easerve serve --engine ray`: run the Ray Serve application from the command line.

Without `--address` a local cluster is started in this process (Ray's head: GCS, raylet,
Serve's controller and HTTP proxy, one process per replica) with at least as many logical CPUs
as the deployments reserve, so the application fits on one machine whatever its core count
(the replicas then share the cores, as the threads of `easerve serve` do); with `--address auto`
(or `ray://...`, `host:port`) the application is deployed on that cluster. Serve's HTTP proxy
listens on `--host` and `--port`. SIGTERM or Ctrl-C deletes the application (every replica
answers what it holds first) and, for a cluster started here, stops the cluster.

Exit status: 0 after a clean shutdown, 1 if the application failed to deploy, 2 for invalid
settings or missing models.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

import ray
from ray import serve

from easerve.service.model_config import ModelConfigError
from easerve.service.model_files import ModelFilesError
from easerve.service.settings import Settings

from .app import bind_plan, plan_app
from .config import APP_NAME, cpus_needed, whole_cpus

logger = logging.getLogger("easerve.ray")
# How long the cluster address may take to accept a connection before `easerve serve` gives up.
CONNECT_TIMEOUT_S = 10.0


def _unreachable(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why nothing answers at a `host:port` cluster address (a TCP connection to its GCS port),
    or None when something does, or for `auto` and Ray Client (`ray://`) addresses, which Ray
    resolves itself."""
    if address is None or address == "auto" or "://" in address:
        return None
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        return None
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return None
    except OSError as error:
        return f"nothing answers at {address} ({error})"


def serve_on_ray(settings: Settings) -> int:
    try:
        plan = plan_app(settings)
    except (ModelFilesError, ModelConfigError) as error:
        logger.error("%s", error)
        return 2
    joining = settings.ray_address is not None
    unreachable = _unreachable(settings.ray_address) if joining else None
    if unreachable is not None:
        # Ray itself retries an address nobody answers at for minutes, silently.
        logger.error("could not join the Ray cluster at %s: %s", settings.ray_address, unreachable)
        return 1
    try:
        if joining:
            ray.init(address=settings.ray_address, logging_level=logging.WARNING)
        else:
            num_cpus = max(os.cpu_count() or 1, whole_cpus(cpus_needed(plan.deployments)))
            logger.info("starting a local Ray cluster with %d logical CPUs", num_cpus)
            # "local": a new cluster of our own, never one that `ray start` left on this machine.
            ray.init(address="local", num_cpus=num_cpus, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as error:
        logger.error(
            "could not %s: %s", f"join the Ray cluster at {settings.ray_address}" if joining else "start Ray", error
        )
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stop.set())
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        try:
            serve.run(bind_plan(plan), name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as error:
            logger.error("the application failed to deploy: %s", error)
            return 1
        logger.info(
            "serving %s on http://%s:%d (Ray Serve, %s)",
            ", ".join(plan.models),
            settings.host,
            settings.port,
            f"cluster {settings.ray_address}" if joining else "local cluster",
        )
        stop.wait()
        logger.info("shutting down: deleting the application (its replicas answer what they hold)")
        serve.delete(APP_NAME)
        return 0
    finally:
        if not joining:
            serve.shutdown()
        ray.shutdown(wait_for_processes=not joining)
