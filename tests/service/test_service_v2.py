"""The Open Inference Protocol v2: metadata, JSON and binary tensors, malformed tensors, and
Triton's own Python client against a live server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_fixtures import CLASSIFY_SIZE, MAX_BATCH, SEGMENT_SIZE, Z_DIM, model_name
from service_helpers import LiveServer, make_settings

from easerve.service.app import create_app
from easerve.service.v2.schemas import InferResponse

CLASSIFIER = model_name("fixcls")
GENERATOR = model_name("fixgan")
HEADER_LENGTH = "Inference-Header-Content-Length"


def colour_images(*channels: int) -> np.ndarray:
    """(n, 3, H, W) images, image i all ones in channel `channels[i]`."""
    images = np.zeros((len(channels), 3, *CLASSIFY_SIZE), np.float32)
    for i, channel in enumerate(channels):
        images[i, channel] = 1.0
    return images


def expected_logits(channels: list[int]) -> np.ndarray:
    logits = np.zeros((len(channels), 6), np.float32)
    logits[np.arange(len(channels)), channels] = 4.0
    return logits


def image_input(images: np.ndarray, **overrides) -> dict:
    return {
        "name": "image",
        "shape": list(images.shape),
        "datatype": "FP32",
        "data": images.ravel().tolist(),
        **overrides,
    }


def infer(client, body: dict, model: str = CLASSIFIER):
    return client.post(f"/v2/models/{model}/infer", json=body)


def assert_bad_tensor(response, *fragments: str) -> None:
    assert response.status_code == 400, response.text
    for fragment in fragments:
        assert fragment in response.json()["error"], response.json()["error"]


# -- metadata and health ----------------------------------------------------------------------


def test_server_metadata_and_health(client):
    metadata = client.get("/v2").json()
    assert metadata["name"] == "easerve" and "binary_tensor_data" in metadata["extensions"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{CLASSIFIER}/ready").json() == {"name": CLASSIFIER, "ready": True}


def test_model_metadata_has_variable_dims_as_minus_one(client):
    metadata = client.get(f"/v2/models/{model_name('fixseg')}").json()
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    detector = client.get(f"/v2/models/{model_name('fixdet')}/versions/1").json()
    assert [output["datatype"] for output in detector["outputs"]] == ["FP32", "FP32", "INT64"]


def test_model_config_in_triton_form(client):
    config = client.get(f"/v2/models/{CLASSIFIER}/config").json()
    assert config["max_batch_size"] == MAX_BATCH
    assert config["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [3, *CLASSIFY_SIZE]}]


def test_unknown_model_is_404(client):
    assert client.get("/v2/models/nope").status_code == 404
    response = infer(client, {"inputs": []}, model="nope")
    assert response.status_code == 404 and "nope" in response.json()["error"]


# -- JSON tensors -----------------------------------------------------------------------------


def test_json_infer_with_flat_data(client):
    response = infer(client, {"id": "req-7", "inputs": [image_input(colour_images(0, 2))]})
    assert response.status_code == 200
    answer = response.json()
    assert (answer["model_name"], answer["id"]) == (CLASSIFIER, "req-7")
    parameters = answer["parameters"]
    assert (parameters["attention"], parameters["backend"], parameters["batch_size"]) == (
        "ea",
        "onnxruntime-cpu/fp32",
        2,
    )
    assert 0 <= parameters["queue_ms"] <= parameters["total_ms"]
    (output,) = answer["outputs"]
    assert (output["name"], output["shape"], output["datatype"]) == ("logits", [2, 6], "FP32")
    np.testing.assert_allclose(np.reshape(output["data"], (2, 6)), expected_logits([0, 2]), atol=1e-5)


def test_the_answer_is_what_the_documented_schema_says(client):
    answer = infer(client, {"inputs": [image_input(colour_images(0, 2))]}).content
    document = InferResponse.model_validate_json(answer)  # the bytes orjson wrote, read by the schema
    assert document.outputs[0].shape == [2, 6] and "id" not in json.loads(answer)  # no id asked, none sent
    documented = client.get("/openapi.json").json()["paths"]["/v2/models/{model_name}/infer"]["post"]["responses"]
    assert documented["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/InferResponse"}


def test_json_infer_with_nested_data(client):
    images = colour_images(1)
    response = infer(client, {"inputs": [image_input(images, data=images.tolist())]})
    assert response.status_code == 200
    np.testing.assert_allclose(
        np.reshape(response.json()["outputs"][0]["data"], (1, 6)), expected_logits([1]), atol=1e-5
    )


def test_two_input_model_and_requested_outputs(client):
    z = np.zeros((2, Z_DIM), np.float32)
    body = {
        "inputs": [
            {"name": "z", "shape": [2, Z_DIM], "datatype": "FP32", "data": z.ravel().tolist()},
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 5]},
        ],
        "outputs": [{"name": "image"}],
    }
    response = infer(client, body, model=GENERATOR)
    assert response.status_code == 200
    image = np.reshape(response.json()["outputs"][0]["data"], (2, 3, 8, 8))
    np.testing.assert_allclose(image[:, 0, 0, 0], np.tanh([0.0, 0.5]), atol=1e-5)


def test_a_small_answer_is_encoded_where_the_batch_ran_and_a_large_one_on_a_worker(client, worker_hops):
    """One worker hop (the parse) when the answer is at most a few times the inputs (logits of an
    image); a second to encode a larger one (images from a latent, a segmentation's logits)."""
    assert infer(client, {"inputs": [image_input(colour_images(0, 1))]}).status_code == 200
    assert worker_hops == ["_parse_request"]
    worker_hops.clear()
    z = np.zeros((1, Z_DIM), np.float32)
    inputs = [
        {"name": "z", "shape": [1, Z_DIM], "datatype": "FP32", "data": z.ravel().tolist()},
        {"name": "label", "shape": [1], "datatype": "INT64", "data": [3]},
    ]
    assert infer(client, {"inputs": inputs}, model=GENERATOR).status_code == 200
    assert worker_hops == ["_parse_request", "applied"]
    # A segmentation's logits are 7/3 of its input, but as JSON text many times more.
    worker_hops.clear()
    scene = np.zeros((1, 3, *SEGMENT_SIZE), np.float32)
    assert infer(client, {"inputs": [image_input(scene)]}, model=model_name("fixseg")).status_code == 200
    assert worker_hops == ["_parse_request", "applied"]


# -- binary tensors ---------------------------------------------------------------------------


def binary_request(images: np.ndarray, binary_output: bool) -> tuple[bytes, dict[str, str]]:
    blob = images.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": list(images.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": binary_output}}],
        }
    ).encode()
    return header + blob, {HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"}


def test_binary_input_and_binary_output(client):
    body, headers = binary_request(colour_images(2, 1, 0), binary_output=True)
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", content=body, headers=headers)
    assert response.status_code == 200
    length = int(response.headers[HEADER_LENGTH])
    header = json.loads(response.content[:length])
    (output,) = header["outputs"]
    assert output["parameters"]["binary_data_size"] == 3 * 6 * 4 and "data" not in output
    logits = np.frombuffer(response.content[length:], "<f4").reshape(output["shape"])
    np.testing.assert_allclose(logits, expected_logits([2, 1, 0]), atol=1e-5)


def test_binary_input_with_json_output(client):
    body, headers = binary_request(colour_images(1), binary_output=False)
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", content=body, headers=headers)
    assert response.status_code == 200 and HEADER_LENGTH not in {k.title() for k in response.headers}
    np.testing.assert_allclose(
        np.reshape(response.json()["outputs"][0]["data"], (1, 6)), expected_logits([1]), atol=1e-5
    )


# -- malformed tensors ------------------------------------------------------------------------


def test_wrong_datatype(client):
    assert_bad_tensor(infer(client, {"inputs": [image_input(colour_images(0), datatype="FP64")]}), "FP64", "FP32")


def test_shape_and_data_disagree(client):
    images = colour_images(0)
    body = {"inputs": [image_input(images, data=images.ravel().tolist()[:-5])]}
    assert_bad_tensor(infer(client, body), "needs 768 values", "763")


def test_wrong_rank(client):
    assert_bad_tensor(infer(client, {"inputs": [image_input(colour_images(0), shape=[3, 16, 16])]}), "shape")


def test_wrong_fixed_dimension(client):
    images = np.zeros((1, 3, 8, 32), np.float32)
    assert_bad_tensor(infer(client, {"inputs": [image_input(images)]}), "dimension 2", "16")


def test_negative_dimension(client):
    assert_bad_tensor(infer(client, {"inputs": [image_input(colour_images(0), shape=[-1, 3, 16, 16])]}), "shape")


def test_ragged_data(client):
    body = {
        "inputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [[1], [1, 2]]},
            {"name": "z", "shape": [2, Z_DIM], "datatype": "FP32", "data": [0.0] * (2 * Z_DIM)},
        ]
    }
    assert_bad_tensor(infer(client, body, model=GENERATOR), "ragged")


def test_non_numeric_data(client):
    images = colour_images(0)
    data = ["a"] * images.size
    assert_bad_tensor(infer(client, {"inputs": [image_input(images, data=data)]}), "not FP32")


def test_fractional_values_for_an_integer_input(client):
    body = {
        "inputs": [
            {"name": "label", "shape": [1], "datatype": "INT64", "data": [1.5]},
            {"name": "z", "shape": [1, Z_DIM], "datatype": "FP32", "data": [0.0] * Z_DIM},
        ]
    }
    assert_bad_tensor(infer(client, body, model=GENERATOR), "not INT64")


def test_missing_input(client):
    body = {"inputs": [{"name": "z", "shape": [1, Z_DIM], "datatype": "FP32", "data": [0.0] * Z_DIM}]}
    assert_bad_tensor(infer(client, body, model=GENERATOR), "missing", "label")


def test_unknown_input(client):
    body = {"inputs": [image_input(colour_images(0)), {"name": "extra", "shape": [1], "datatype": "FP32", "data": [1]}]}
    assert_bad_tensor(infer(client, body), "unknown input", "extra")


def test_inputs_with_different_batch_sizes(client):
    body = {
        "inputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {"name": "z", "shape": [1, Z_DIM], "datatype": "FP32", "data": [0.0] * Z_DIM},
        ]
    }
    assert_bad_tensor(infer(client, body, model=GENERATOR), "batch")


def test_batch_over_the_models_max(client):
    images = np.zeros((MAX_BATCH + 1, 3, *CLASSIFY_SIZE), np.float32)
    assert_bad_tensor(infer(client, {"inputs": [image_input(images)]}), "batch size", str(MAX_BATCH))


def test_input_without_data(client):
    images = colour_images(0)
    assert_bad_tensor(
        infer(client, {"inputs": [{"name": "image", "shape": list(images.shape), "datatype": "FP32"}]}), "data"
    )


def test_unknown_output_requested(client):
    body = {"inputs": [image_input(colour_images(0))], "outputs": [{"name": "probabilities"}]}
    assert_bad_tensor(infer(client, body), "unknown output")


def test_not_json(client):
    response = client.post(
        f"/v2/models/{CLASSIFIER}/infer", content=b"{inputs: oops", headers={"content-type": "application/json"}
    )
    assert_bad_tensor(response, "malformed")


def test_binary_size_disagrees_with_the_shape(client):
    body, headers = binary_request(colour_images(0), binary_output=False)
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", content=body[:-4], headers=headers)
    assert_bad_tensor(response, "binary")


def test_header_length_beyond_the_body(client):
    body, headers = binary_request(colour_images(0), binary_output=False)
    headers[HEADER_LENGTH] = str(len(body) + 10)
    assert_bad_tensor(
        client.post(f"/v2/models/{CLASSIFIER}/infer", content=body, headers=headers), HEADER_LENGTH.lower()
    )


def test_a_header_length_of_other_digits_is_a_400_not_a_500(client):
    body, headers = binary_request(colour_images(0), binary_output=False)
    for length in ("²", "٣", "1e3", "-1"):
        headers[HEADER_LENGTH] = length.encode("utf-8") if not length.isascii() else length
        response = client.post(f"/v2/models/{CLASSIFIER}/infer", content=body, headers=headers)
        assert_bad_tensor(response, HEADER_LENGTH.lower())


def test_a_content_length_of_other_digits_is_not_a_500(client):
    response = client.post(
        f"/v2/models/{CLASSIFIER}/infer",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": "²".encode()},
    )
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("timeout_us", [1, 3600e6 + 1, 1e30])
def test_a_v2_timeout_out_of_the_v1_bounds_is_refused(client, timeout_us):
    body = {"inputs": [image_input(colour_images(0))], "parameters": {"timeout": timeout_us}}
    response = infer(client, body)
    assert response.status_code == 422
    assert "parameters.timeout" in response.json()["error"]


@pytest.mark.parametrize("binary_output", [False, True], ids=["json", "binary"])
def test_inputs_so_large_the_model_overflows_are_422_not_nulls(client, binary_output):
    huge = np.full((1, 3, *CLASSIFY_SIZE), 3e38, np.float32)
    body = {
        "inputs": [image_input(huge)],
        "outputs": [{"name": "logits", "parameters": {"binary_data": binary_output}}],
    }
    response = infer(client, body)
    assert response.status_code == 422
    assert "not finite" in response.json()["error"]


# -- Triton's client, unchanged ---------------------------------------------------------------


@pytest.fixture(scope="module")
def live(weights_dir):
    app = create_app(make_settings(weights_dir, models=[CLASSIFIER, GENERATOR]))
    with LiveServer(app) as server:
        yield server


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_works_unchanged(live, binary):
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(url=live.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(CLASSIFIER)
        metadata = client.get_model_metadata(CLASSIFIER)
        assert metadata["inputs"][0]["shape"] == [-1, 3, *CLASSIFY_SIZE]
        assert client.get_model_config(CLASSIFIER)["max_batch_size"] == MAX_BATCH
        images = colour_images(0, 1, 2, 0)
        request_input = http.InferInput("image", list(images.shape), "FP32")
        request_input.set_data_from_numpy(images, binary_data=binary)
        result = client.infer(
            CLASSIFIER, [request_input], outputs=[http.InferRequestedOutput("logits", binary_data=binary)]
        )
        np.testing.assert_allclose(result.as_numpy("logits"), expected_logits([0, 1, 2, 0]), atol=1e-5)
    finally:
        client.close()


def test_the_answers_encoding_is_charged_by_how_each_output_is_sent():
    from types import SimpleNamespace

    from easerve.service.routers.v2 import _answer_bytes
    from easerve.service.v2.schemas import InferRequest

    model = SimpleNamespace(manifest=SimpleNamespace(outputs=[SimpleNamespace(name="logits")]))
    outputs = {"logits": np.zeros((1, 7, 512, 512), np.float32)}  # 7 MiB of floats, from a small input
    as_json = InferRequest.model_validate({"inputs": []})
    as_binary = InferRequest.model_validate({"inputs": [], "parameters": {"binary_data_output": True}})
    nbytes = {name: array.nbytes for name, array in outputs.items()}
    json_bytes, binary_bytes = _answer_bytes(as_json, model, nbytes), _answer_bytes(as_binary, model, nbytes)
    # JSON text of the floats is charged well above the tensor (enough to reach the heavy pool
    # from a small request), binary data about twice the tensor.
    assert json_bytes >= 8 * outputs["logits"].nbytes and binary_bytes == 2 * outputs["logits"].nbytes
