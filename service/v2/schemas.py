"""The v2 protocol's JSON documents."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from easerve.artifacts.triton import PLATFORM

MODEL_VERSION = "1"


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str = MODEL_VERSION
    id: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="attention, backend, batch size, timings")
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a variable dimension (the first is the batch)")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = PLATFORM
    # An extension field: the runner and the variant served, as in every inference answer.
    backend: str | None = None
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]
