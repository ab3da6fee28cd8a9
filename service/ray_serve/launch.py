"""`easerve serve --engine ray`: run the Ray Serve application from the command line.

Without `--address` a local cluster is started in this process (Ray's head: GCS, raylet,
Serve's controller and HTTP proxy, one process per replica) with at least as many logical CPUs
as the deployments reserve, so the application fits on one machine whatever its core count
(the replicas then share the cores, as the threads of `easerve serve` do); with `--address auto`
(or `ray://...`, `host:port`) the application is deployed on that cluster. Serve's HTTP proxy
listens on `--host` and `--port`. While the application deploys its progress is logged every
second it changes, and a deployment no node can place is named with what it reserves. SIGTERM or
Ctrl-C, while it deploys or after, deletes the application (every replica answers what it holds
first) and, for a cluster started here, stops the cluster.

Exit status: 0 after a clean shutdown, 1 if the application failed to deploy or was not running
within `--deploy-timeout`, 2 for invalid settings or missing models.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import ray
from ray import serve
from ray.serve.schema import ApplicationStatus

from easerve.service.model_config import ModelConfigError
from easerve.service.model_files import ModelFilesError
from easerve.service.settings import Settings

from .app import AppPlan, bind_plan, plan_app
from .config import APP_NAME, cpus_needed, whole_cpus
from .probes import PROBE_APPS, delete_probes, probe_targets

logger = logging.getLogger("easerve.ray")
# How often the deployment's progress is read while it deploys.
PROGRESS_INTERVAL_S = 1.0
# What Serve says of a deployment whose replicas no node can take (after about 30 s).
UNSCHEDULABLE = "to be scheduled"
PLACEMENT_HINT = (
    " -- each ingress replica reserves --ingress-cpus (default 1) and each model replica --model-cpus or "
    "its `--model-config NAME:num_cpus=C`: lower them to fit the cluster's nodes (`ray status` shows them)"
)
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
    stop = _stop_on_signals(threading.Event())
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
    # Again: `ray.init` puts in its own SIGTERM handler. From here on SIGTERM while the application
    # deploys stops it too.
    _stop_on_signals(stop)
    running = probes_up = False
    try:
        if stop.is_set():  # asked to stop while joining or starting the cluster: deploy nothing
            return 0
        serve.start(http_options={"host": settings.host, "port": settings.port})
        probes_up = True
        failure = _deploy(plan, settings.deploy_timeout_s, stop)
        if failure is not None or stop.is_set():
            # Nothing was served: no grace period to wait out (a replica never placed would
            # hold a blocking delete for all of it).
            if failure is not None:
                logger.error("%s", failure)
            else:
                logger.info("stopped before the application was running: deleting it")
            serve.delete(APP_NAME, _blocking=False)
            return 1 if failure is not None else 0
        running = True
        delete_probes()
        probes_up = False
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
        if probes_up:  # whatever ended the deploy: on a joined cluster they would shadow the probes
            _delete_probes_if_possible()
        # A cluster of our own: Serve's shutdown lets the replicas finish what they hold; when
        # the application never ran, there is nothing to finish and stopping Ray is enough
        # (Serve's shutdown would wait out its controller's timeout for replicas never placed).
        if not joining and running:
            serve.shutdown()
        ray.shutdown(wait_for_processes=not joining)


def _delete_probes_if_possible() -> None:
    try:
        delete_probes()
    except Exception as error:  # noqa: BLE001 - the cluster may be what failed; say what is left
        logger.warning("could not delete the probes' stand-ins (%s): `serve delete %s`", error, " ".join(PROBE_APPS))


def _stop_on_signals(stop: threading.Event) -> threading.Event:
    """SIGTERM and SIGINT set `stop`."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stop.set())
    return stop


def _deploy(plan: AppPlan, timeout_s: float, stop: threading.Event) -> str | None:
    """Deploy the application and wait, logging its progress, until it is running (None), it
    failed or `timeout_s` passed (the reason), or `stop` is set (None: the caller looks)."""
    target = serve.RunTarget(bind_plan(plan), name=APP_NAME, route_prefix="/")
    try:
        # Not Serve's own wait: it cannot be interrupted, and says nothing while it waits.
        serve.run_many(
            [*probe_targets(), target], wait_for_ingress_deployment_creation=False, wait_for_applications_running=False
        )
    except RuntimeError as error:
        return f"the application failed to deploy: {error}"
    deadline = time.monotonic() + timeout_s
    reported, progress, warned = "", "not yet known to Serve", set()
    while not stop.wait(PROGRESS_INTERVAL_S):
        if time.monotonic() > deadline:
            return f"the application was not running after {timeout_s:g} s (--deploy-timeout): {progress}"
        application = serve.status().applications.get(APP_NAME)
        if application is None:
            continue
        if application.status == ApplicationStatus.RUNNING:
            return None
        if application.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
            return f"the application failed to deploy: {application.message}"
        progress = deploy_progress(application.deployments)
        if progress != reported:
            logger.info("deploying: %s", progress)
            reported = progress
        for name, deployment in application.deployments.items():
            if name not in warned and UNSCHEDULABLE in deployment.message:
                warned.add(name)
                logger.warning("%s%s", deployment.message, PLACEMENT_HINT)
    return None


def deploy_progress(deployments: Mapping[str, Any]) -> str:
    """ "3/4 replicas running (easerve 1/1, eamlp-ea-tiny 2/3)" from Serve's deployment statuses."""
    counts = {}
    for name, deployment in deployments.items():
        states = {str(getattr(state, "value", state)): count for state, count in deployment.replica_states.items()}
        counts[name] = (states.get("RUNNING", 0), sum(count for state, count in states.items() if state != "STOPPING"))
    running = sum(up for up, _ in counts.values())
    wanted = sum(total for _, total in counts.values())
    each = ", ".join(f"{name} {up}/{total}" for name, (up, total) in counts.items())
    return f"{running}/{wanted} replicas running ({each})"
