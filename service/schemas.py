"""The fields every inference response shares: which model answered, and how long it took."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Timings(BaseModel):
    queue_ms: float = Field(description="time queued before its batch started")
    compute_ms: float = Field(description="compute time of the batch it ran in")
    total_ms: float = Field(description="from the request's arrival to the response")


class InferenceResponse(BaseModel):
    model: str
    attention: str = Field(description="ea (External Attention) or sa (self-attention)")
    backend: str = Field(description="the runner, e.g. onnxruntime-cpu")
    batch_size: int = Field(description="items in the batch this request was computed in")
    timings: Timings
