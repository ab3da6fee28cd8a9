"""The API key, checked before anything else of a request is read (its body included).

With `api_key` set, every inference route (each POST) needs it; with `protect_metadata` too,
so do the metadata routes (`/metrics`, `/v1/models`, `/v2...`, `/docs`, `/openapi.json`, the
console's samples). The health probes stay open, so an orchestrator needs no secret, and so do
the console's page and static files, which hold no data. The key may come as
`Authorization: Bearer <key>` or `X-API-Key: <key>` and is compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from easerve.service.errors import Unauthorized, error_response

API_KEY_HEADER = "x-api-key"
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
# The console's page and its static files hold no data (a browser cannot send a key when it
# navigates); everything the page shows comes from API calls that carry the key.
CONSOLE_SHELL = frozenset({"/", "/ui", "/ui/"})
CONSOLE_ASSETS = "/ui/assets/"

# What the OpenAPI document shows as the routes' security schemes; the check is the middleware.
DOCUMENTED_SCHEMES = (
    APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key, when one is set"),
    HTTPBearer(auto_error=False, description="the server's API key as a bearer token, when one is set"),
)


def needs_key(method: str, path: str, protect_metadata: bool) -> bool:
    """Whether a request to `path` must carry the key (given that a key is set)."""
    if path in HEALTH_PATHS or (method != "POST" and (path in CONSOLE_SHELL or path.startswith(CONSOLE_ASSETS))):
        return False
    return method == "POST" or protect_metadata


def presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return headers.get(API_KEY_HEADER)


def key_matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


class ApiKeyMiddleware:
    """401 before the route runs (and before its body is read) for a missing or wrong key."""

    def __init__(self, app: ASGIApp, api_key: str, protect_metadata: bool) -> None:
        self.app = app
        self._api_key = api_key
        self._protect_metadata = protect_metadata

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and needs_key(scope["method"], scope["path"], self._protect_metadata):
            if not key_matches(presented_key(Headers(scope=scope)), self._api_key):
                error = Unauthorized("missing or wrong API key (send Authorization: Bearer <key> or X-API-Key)")
                await error_response(error.status_code, error.message, error.headers())(scope, receive, send)
                return
        await self.app(scope, receive, send)
