"""The Open Inference Protocol v2 routes (KServe / Triton REST), through the same batchers.

    GET  /v2                         server metadata
    GET  /v2/health/live, /v2/health/ready
    GET  /v2/models/{name}[/versions/{v}]          model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    GET  /v2/models/{name}[/versions/{v}]/config   Triton-style model configuration
    POST /v2/models/{name}[/versions/{v}]/infer    JSON tensors or the binary extension

The timeout of a request is `parameters.timeout` in microseconds, as Triton's clients send it.
A request's cost is admitted in two parts: its body's decoding before it is parsed, then the
model's predicted working memory for the checked shapes (`contract.tensors_working_bytes`)
before its batch is queued.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

import easerve
from easerve.artifacts.triton import model_configuration
from easerve.service.batcher import BatchOutcome, Finish
from easerve.service.codecs.uploads import JSON_NUMBERS_BYTES_PER_BODY_BYTE
from easerve.service.contract import InputLimits, output_nbytes, tensors_working_bytes
from easerve.service.dependencies import API_KEY_OPENAPI, State, inference_context
from easerve.service.door import MAX_TIMEOUT_S, MIN_TIMEOUT_S
from easerve.service.errors import BadRequest, InvalidInput, NotFound, describe_validation_errors
from easerve.service.inference import SMALL_ANSWER_MODEL_INPUTS, InferenceContext
from easerve.service.openapi import INFERENCE_ERRORS, MODEL_ERRORS, READINESS_503
from easerve.service.repository import ServedModel
from easerve.service.v2.binary import HEADER_LENGTH, binary_inputs, encode_response, split_body, wants_binary
from easerve.service.v2.schemas import InferRequest, InferResponse, ModelMetadata, ServerMetadata
from easerve.service.v2.tensors import decode_inputs, encode_output, tensor_metadata

router = APIRouter(prefix="/v2", tags=["v2"])
# The answer is encoded by orjson from plain values (`_encode`); its schema is documented here.
INFER_RESPONSES = {
    200: {"model": InferResponse, "description": "the outputs (JSON, or a JSON header + binary data)"},
    **INFERENCE_ERRORS,
}

EXTENSIONS = ["binary_tensor_data", "model_configuration"]
_MICROSECONDS = 1e-6
# Working memory per byte of a binary body: the tensors are read into arrays and converted once.
_BINARY_BYTES_PER_BODY_BYTE = 3
# Bytes held while outputs are encoded, per byte of output tensor: as JSON, a float32 written as
# text (up to ~20 characters for 4 bytes) and the response's copy of it; as binary data, the
# tensor's bytes and the response's copy.
_JSON_BYTES_PER_OUTPUT_BYTE = 10
_BINARY_BYTES_PER_OUTPUT_BYTE = 2
# Outputs of at most this many bytes (a class ranking's logits) encode in microseconds: a batcher
# whose model ran elsewhere may encode them on its event loop (`Finish.light`).
_LIGHT_OUTPUT_BYTES = 4096


@router.get("", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="easerve", version=easerve.__version__, extensions=EXTENSIONS)


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: READINESS_503})
async def ready(state: State) -> JSONResponse:
    return JSONResponse({"ready": state.lifecycle.ready}, status_code=200 if state.lifecycle.ready else 503)


@router.get("/models/{model_name}", response_model=ModelMetadata, responses=MODEL_ERRORS)
@router.get("/models/{model_name}/versions/{version}", response_model=ModelMetadata, include_in_schema=False)
async def model_metadata(model_name: str, state: State, version: str | None = None) -> ModelMetadata:
    model = served_version(state, model_name, version)
    manifest = model.manifest
    return ModelMetadata(
        name=manifest.name,
        versions=[str(model.version)],
        backend=model.backend,
        inputs=[tensor_metadata(tensor) for tensor in manifest.inputs],
        outputs=[tensor_metadata(tensor) for tensor in manifest.outputs],
    )


@router.get("/models/{model_name}/ready", responses={**MODEL_ERRORS, 503: READINESS_503})
@router.get("/models/{model_name}/versions/{version}/ready", include_in_schema=False)
async def model_ready(model_name: str, state: State, version: str | None = None) -> JSONResponse:
    model = served_version(state, model_name, version)
    is_ready = model.state == "ready"
    return JSONResponse({"name": model.name, "ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{model_name}/config", responses=MODEL_ERRORS)
@router.get("/models/{model_name}/versions/{version}/config", include_in_schema=False)
async def model_config(model_name: str, state: State, version: str | None = None) -> dict[str, Any]:
    """The model as a Triton model configuration (what perf_analyzer and tritonclient read)."""
    model = served_version(state, model_name, version)
    serving = model.serving
    return model_configuration(
        model.manifest,
        max_batch_size=serving.max_batch_size,
        instances=serving.instances,
        max_queue_delay_us=int(serving.max_queue_delay_ms * 1000),
        preferred_batch_sizes=serving.preferred_batch_sizes,
    )


def served_version(state: State, model_name: str, version: str | None) -> ServedModel:
    """The model served as `model_name`; NotFound when a version is named that is not the one
    served (the newest loaded)."""
    model = state.repository.get(model_name)
    if version is not None and version != str(model.version):
        raise NotFound(f"version {version} of {model_name} is not served; version {model.version} is")
    return model


def _parse_request(
    body: bytes, header_length: str | None, model: ServedModel, limits: InputLimits
) -> tuple[InferRequest, dict[str, np.ndarray]]:
    header, rest = split_body(body, header_length)
    try:
        document = InferRequest.model_validate_json(header)
    except ValidationError as error:
        raise BadRequest(f"malformed v2 inference request: {describe_validation_errors(error.errors())}") from None
    arrays = decode_inputs(document, binary_inputs(document, rest), model.manifest, limits)
    return document, arrays


def _check_wanted_outputs(document: InferRequest, model: ServedModel) -> None:
    """BadRequest when the request asks for an output the model does not have."""
    names = [tensor.name for tensor in model.manifest.outputs]
    unknown = sorted({output.name for output in document.outputs or []} - set(names))
    if unknown:
        raise BadRequest(f"unknown output(s) {unknown}; {model.name} has {sorted(names)}")


def _parameters(context: InferenceContext, outcome: BatchOutcome) -> dict[str, Any]:
    """The response's parameters: what answered the request and how long it took."""
    fields = context.response_fields(outcome)
    return {name: fields[name] for name in ("attention", "backend", "batch_size")} | fields["timings"]


def _check_finite(name: str, output: np.ndarray) -> None:
    """InvalidInput when a floating output holds NaN or infinity: inputs of extreme (still finite)
    magnitude overflow the model, and JSON would carry such values as null."""
    if output.dtype.kind == "f" and not np.isfinite(output).all():
        raise InvalidInput(
            f"the model's output {name!r} is not finite (NaN or infinity) for this input: its values are too "
            "large for the model (keep inputs to the range the model was trained on)"
        )


def _sent_outputs(document: InferRequest, model: ServedModel) -> dict[str, bool]:
    """The outputs the answer holds (those asked for, else all), each with whether it is sent as
    binary data."""
    wanted = {output.name: output for output in document.outputs or []}
    return {
        tensor.name: wants_binary(document, wanted.get(tensor.name))
        for tensor in model.manifest.outputs
        if not wanted or tensor.name in wanted
    }


def _answer_bytes(document: InferRequest, model: ServedModel, output_nbytes: dict[str, int]) -> int:
    """Estimated memory held while the answer is encoded, by how each output is sent."""
    sent = _sent_outputs(document, model)
    per_byte = {True: _BINARY_BYTES_PER_OUTPUT_BYTE, False: _JSON_BYTES_PER_OUTPUT_BYTE}
    return sum(per_byte[as_bytes] * output_nbytes[name] for name, as_bytes in sent.items())


def _encoding(document: InferRequest, model: ServedModel, context: InferenceContext, light: bool) -> Finish:
    """The answer to `document`: its response, made of the request's outputs where the batch
    ran or on a worker (`InferenceContext.answer`)."""

    def encode(outcome: BatchOutcome) -> Response:
        return _encode(document, model, outcome.outputs, _parameters(context, outcome))

    return Finish(encode, light=light)


def _encode(
    document: InferRequest, model: ServedModel, outputs: dict[str, np.ndarray], parameters: dict[str, Any]
) -> Response:
    binary = _sent_outputs(document, model)
    for name in binary:
        _check_finite(name, outputs[name])
    encoded = [encode_output(name, outputs[name], as_bytes) for name, as_bytes in binary.items()]
    response: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if document.id is not None:
        response["id"] = document.id
    response |= {"parameters": parameters, "outputs": [entry for entry, _ in encoded]}
    return encode_response(response, [blob for _, blob in encoded], any(binary.values()))


@router.post("/models/{model_name}/infer", openapi_extra=API_KEY_OPENAPI, responses=INFER_RESPONSES)
@router.post(
    "/models/{model_name}/versions/{version}/infer",
    openapi_extra=API_KEY_OPENAPI,
    responses=INFER_RESPONSES,
    include_in_schema=False,
)
async def infer(model_name: str, request: Request, state: State, version: str | None = None) -> Response:
    """Run the model on the request's tensors (JSON `data`, or binary after the JSON header)."""
    model = served_version(state, model_name, version)
    async with inference_context(request, state, model, None, model.max_batch_size) as context:
        body = await context.read(request.body())
        header_length = request.headers.get(HEADER_LENGTH)
        per_byte = JSON_NUMBERS_BYTES_PER_BODY_BYTE if header_length is None else _BINARY_BYTES_PER_BODY_BYTE
        context.admit(per_byte * len(body), "the request's tensors")
        document, arrays = await context.offload(_parse_request, body, header_length, model, context.limits)
        timeout_us = document.parameters.get("timeout")
        if isinstance(timeout_us, (int, float)) and not isinstance(timeout_us, bool) and timeout_us > 0:
            if not MIN_TIMEOUT_S <= timeout_us * _MICROSECONDS <= MAX_TIMEOUT_S:
                raise InvalidInput(
                    f"parameters.timeout is in microseconds and must be from {MIN_TIMEOUT_S * 1e6:.0f} to "
                    f"{MAX_TIMEOUT_S * 1e6:.0f} (as `timeout=` of the v1 routes), got {timeout_us}"
                )
            context.with_timeout(timeout_us * _MICROSECONDS)
        _check_wanted_outputs(document, model)
        shapes = {name: array.shape for name, array in arrays.items()}
        model_bytes = tensors_working_bytes(model.manifest, shapes)
        context.admit(0, f"the model's work on shapes {shapes}", model_bytes=model_bytes)
        expected = output_nbytes(model.manifest, shapes)
        if expected is None:  # an output's size is known only once computed
            outcome = await context.infer(arrays)
            answer_bytes = _answer_bytes(
                document, model, {name: array.nbytes for name, array in outcome.outputs.items()}
            )
            context.admit(answer_bytes, "encoding the answer")
            return (await context.offload(_encoding(document, model, context, light=False).applied, outcome)).answer
        sizes = dict(zip((tensor.name for tensor in model.manifest.outputs), expected, strict=True))
        answer_bytes = _answer_bytes(document, model, sizes)
        context.admit(answer_bytes, "encoding the answer")
        encoding = _encoding(document, model, context, light=sum(expected) <= _LIGHT_OUTPUT_BYTES)
        # Outputs as JSON text can be many times their tensors: encoded on the runner's thread
        # they would hold up every other request's next batch, so only an answer bounded by the
        # request's own input is.
        small = answer_bytes <= SMALL_ANSWER_MODEL_INPUTS * sum(array.nbytes for array in arrays.values())
        return await context.answer(arrays, encoding, on_the_runner=small)
