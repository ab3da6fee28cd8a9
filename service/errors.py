"""Typed service errors and the one place they become HTTP responses (`{"error": "..."}`).

Code anywhere in the service raises a `ServiceError` subclass with a message meant for the
client; `install_error_handlers` maps it, FastAPI's validation errors and unknown routes to
JSON with the right status code. Anything else is a bug: logged, answered 500.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with a client-facing message; `status_code` decides the HTTP status and
    `reason` the `reason` label of the failure metrics."""

    status_code = 500
    reason = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        return {}


class BadRequest(ServiceError):
    """Malformed input: undecodable image, truncated file, malformed tensor."""

    status_code = 400
    reason = "bad_request"


class Unauthorized(ServiceError):
    status_code = 401
    reason = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class NotFound(ServiceError):
    """Unknown model, or no served model matches the request's task and attention kind."""

    status_code = 404
    reason = "not_found"


class PayloadTooLarge(ServiceError):
    """Body, image pixels, image count or point count over its limit."""

    status_code = 413
    reason = "too_large"


class LoadFailed(ServiceError):
    """A model could not be loaded; the version served before (if any) still serves."""

    status_code = 400
    reason = "load_failed"


class UnsupportedMediaType(ServiceError):
    """Content type or image format the endpoint does not take."""

    status_code = 415
    reason = "unsupported_media_type"


class InvalidInput(ServiceError):
    """Well-formed input with values the model cannot take (NaN points, wrong shape, bad label)."""

    status_code = 422
    reason = "invalid_input"


class RetryLater(ServiceError):
    """A refusal the client should retry after `retry_after_s` (its `Retry-After`)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class QueueFull(RetryLater):
    """The model's queue is at `max_queue_size`."""

    status_code = 429
    reason = "queue_full"


class Overloaded(RetryLater):
    """The server's budget of work in flight is spent."""

    status_code = 503
    reason = "overloaded"


class ClientClosedRequest(ServiceError):
    """The client went away before its request was answered (nginx's 499: nobody reads it)."""

    status_code = 499
    reason = "client_closed"


class InferenceFailed(ServiceError):
    """The runner raised while computing a batch."""

    status_code = 500
    reason = "inference_failed"


class Unavailable(ServiceError):
    """Not ready yet (models loading), or shutting down."""

    status_code = 503
    reason = "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before it could be answered (reading, decoding, queued,
    computing or post-processing)."""

    status_code = 504
    reason = "deadline_exceeded"


class DeadlineUnreachable(DeadlineExceeded):
    """The scheduler foresaw that the request could not be done by its deadline even computed
    alone, so it was answered at once and never computed (counted apart from `DeadlineExceeded`)."""

    reason = "deadline_unreachable"


# The errors a model's batcher (or the model control of `--http-workers`' model process) answers,
# by name: another process (a Ray replica, that model process) sends them as values, the caller
# raises them again.
_WIRE_ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in (
        BadRequest,
        InvalidInput,
        LoadFailed,
        NotFound,
        PayloadTooLarge,
        InferenceFailed,
        Unavailable,
        DeadlineExceeded,
        DeadlineUnreachable,
    )
}
_RETRY_AFTER_ERRORS: dict[str, type[RetryLater]] = {cls.__name__: cls for cls in (QueueFull, Overloaded)}


def error_to_wire(error: ServiceError) -> dict[str, Any]:
    """`error` as plain data (JSON-safe): its class name, message and Retry-After."""
    return {
        "type": type(error).__name__,
        "message": error.message,
        "retry_after_s": getattr(error, "retry_after_s", None),
    }


def error_from_wire(wire: dict[str, Any]) -> ServiceError:
    """The error `error_to_wire` described (an unknown name: InferenceFailed)."""
    name, message = wire["type"], wire["message"]
    if name in _RETRY_AFTER_ERRORS:
        return _RETRY_AFTER_ERRORS[name](message, wire.get("retry_after_s") or 1.0)
    return _WIRE_ERRORS.get(name, InferenceFailed)(message)


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The service's one error body: `{"error": message}`."""
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def describe_validation_errors(errors: Sequence[Mapping[str, Any]], shown: int = 3) -> str:
    """One line for pydantic/FastAPI validation errors: "where: what; ..." (the first `shown`)."""
    parts = []
    for detail in errors[:shown]:
        location = ".".join(str(item) for item in detail.get("loc", ()) if item != "body")
        message = detail.get("msg", "invalid")
        parts.append(f"{location}: {message}" if location else message)
    if len(errors) > shown:
        parts.append(f"and {len(errors) - shown} more")
    return "; ".join(parts) or "invalid request"


async def _service_error(request: Request, error: ServiceError) -> JSONResponse:
    # Refusals under load are answers, not faults: logging each would flood the log when busy.
    if error.status_code >= 500 and not isinstance(error, (Unavailable, DeadlineExceeded, Overloaded)):
        logger.error("%s %s: %s", request.method, request.url.path, error.message)
    return error_response(error.status_code, error.message, error.headers())


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return error_response(422, describe_validation_errors(error.errors()))


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    return error_response(error.status_code, str(error.detail), dict(error.headers or {}))


async def _client_disconnected(request: Request, error: ClientDisconnect) -> JSONResponse:
    closed = ClientClosedRequest("the client closed the connection before its request was answered")
    return error_response(closed.status_code, closed.message, {"Connection": "close"})


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    # A bug: the connection is closed after the answer, since the request may be half-read.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error", {"Connection": "close"})


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the service can raise to a JSON response, in one place."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected_error)
