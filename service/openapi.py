"""What the OpenAPI document says each route can answer besides 200, with the one error body.

Every status the service sends is listed where it can happen: `COMMON_ERRORS` on every route
(the API key, connection timeouts, the body limit, overload and shutdown), `INFERENCE_ERRORS`
on the inference routes, `MODEL_ERRORS` on routes that name a model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="what went wrong, for a person")


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("missing or wrong API key (when the server has one)"),
    408: _error("the request's headers or body did not arrive in time"),
    413: _error("the body is over the size limit"),
    503: _error("not ready, shutting down, or over the connection limit; see Retry-After"),
}
READINESS_503: dict[str, Any] = {"description": "not ready: loading, failed or shutting down"}
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: _error("unknown model, or no served model for the task and attention kind"),
    422: _error("invalid parameters"),
}
INFERENCE_ERRORS: dict[int | str, dict[str, Any]] = {
    **MODEL_ERRORS,
    400: _error("malformed input: undecodable image or file, invalid JSON or tensor"),
    413: _error("over a limit: body size, images, pixels, points, or the request's estimated working memory"),
    415: _error("a content type or image format the route does not take"),
    422: _error("well-formed input the model cannot take (bad label, NaN points, wrong shape, parameters)"),
    429: _error("the model's queue is full; see Retry-After"),
    500: _error("inference failed: a fault of the server or model, never of a valid input"),
    503: _error("not ready, shutting down, or the server's budget of work in flight is spent; see Retry-After"),
    504: _error("the request's deadline passed before it could be answered"),
}
