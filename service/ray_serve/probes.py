"""`/healthz` and `/readyz` while the Ray Serve application deploys.

Ray's proxy owns the port from `serve.start` on, and holds a request for the application until
its ingress has a replica: on a cluster where the ingress cannot be placed yet, a probe would
hang. So while the application deploys, two small applications of their own (no CPU reserved,
placed at once) answer the probes' paths, as `easerve serve` answers them while its models load:
`/healthz` 200 (the server is alive), `/readyz` 503 with Retry-After and the phase. Once the
application runs they are deleted and its ingress answers both.
"""

from __future__ import annotations

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import JSONResponse

PROBE_APPS = {"easerve-healthz": "/healthz", "easerve-readyz": "/readyz"}
RETRY_AFTER_S = 5


class DeployingProbe:
    """Answers one probe path while the application deploys: `/healthz` when `live_only`, else `/readyz`."""

    def __init__(self, live_only: bool) -> None:
        self._live_only = live_only

    async def __call__(self, request: Request) -> JSONResponse:
        if self._live_only:
            return JSONResponse({"live": True, "phase": "deploying"})
        return JSONResponse(
            {"ready": False, "phase": "deploying"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
        )


ProbeDeployment = serve.deployment(DeployingProbe, num_replicas=1, ray_actor_options={"num_cpus": 0})


def probe_targets() -> list[serve.RunTarget]:
    """The two stand-in applications, one per probe path."""
    return [
        serve.RunTarget(_bound(path == "/healthz"), name=name, route_prefix=path) for name, path in PROBE_APPS.items()
    ]


def _bound(live_only: bool) -> Application:
    return ProbeDeployment.bind(live_only)


def delete_probes() -> None:
    """Remove the stand-ins (not waiting: the application's ingress takes their paths over)."""
    for name in PROBE_APPS:
        serve.delete(name, _blocking=False)
