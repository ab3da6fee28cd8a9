"""The answers of the image routes, made on the runner's thread (classification, detection) or a
worker (segmentation) and encoded once: the same as the model's outputs post-processed by hand,
whatever the transport (raw PNG, multipart, JSON base64), and the same when computed in a batch
of many clients as when computed alone. The bundled models; skipped until weights/ holds them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from service_helpers import TestClient, make_settings, wait_until

from easerve.artifacts.manifest import discover_manifests
from easerve.bench.serve_load import TRANSPORTS, transport_body
from easerve.bench.serve_pipeline import decode_for
from easerve.loadtest.samples import load_samples
from easerve.service.app import create_app
from easerve.service.deadline import Deadline
from easerve.service.model_files import discover_models
from easerve.service.runners.ort import OrtRunner
from easerve.service.tasks.image_input import image_batch, model_image_size
from easerve.service.tasks.segmentation import segment

BUNDLED_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
MODELS = {"classify": "eamlp-ea-tiny", "detect": "eadet-ea-tiny", "segment": "eanet-ea-tiny"}
# A batch and a lone request may round the last float digits differently (other kernels).
PROBABILITY_TOLERANCE = 1e-5

pytestmark = pytest.mark.skipif(not any(discover_manifests(BUNDLED_WEIGHTS)), reason="no exported models in weights/")


# Requests to the classifier wait up to this long for batch mates, so that the concurrent ones
# of the batching test share batches however the threads are scheduled.
BATCHING_DELAY_MS = 200


@pytest.fixture(scope="module")
def served():
    settings = make_settings(
        BUNDLED_WEIGHTS,
        models=list(MODELS.values()),
        model_overrides=[f"{MODELS['classify']}:max_queue_delay_ms={BATCHING_DELAY_MS}"],
    )
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 180.0, "the bundled models' readiness")
        yield client, settings


def _model_outputs(name: str, png: bytes, settings) -> tuple[dict[str, np.ndarray], object]:
    files = discover_models([BUNDLED_WEIGHTS], [name])[0]
    decoded = decode_for(files.manifest, png)
    runner = OrtRunner(files, settings, files.manifest.max_batch_size)
    return runner.run(image_batch([decoded.image], files.manifest)), (files.manifest, decoded)


def _post(client: TestClient, route: str, model: str, png: bytes, transport: str, **params) -> dict:
    body, content_type = transport_body(png, transport)
    response = client.post(
        route, params={"model": model, **params}, content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_classification_is_the_softmax_top_k_of_the_logits(served, transport):
    client, settings = served
    png = load_samples().images[0].png
    outputs, (manifest, _) = _model_outputs(MODELS["classify"], png, settings)
    logits = outputs[manifest.outputs[0].name][0].astype(np.float64)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    expected = np.argsort(-probabilities, kind="stable")[:3]

    answer = _post(client, "/v1/classify", MODELS["classify"], png, transport, top_k=3)

    (result,) = answer["results"]
    assert [entry["index"] for entry in result["top_k"]] == expected.tolist()
    assert [entry["label"] for entry in result["top_k"]] == [manifest.labels[i] for i in expected]
    np.testing.assert_allclose(
        [entry["probability"] for entry in result["top_k"]], probabilities[expected], atol=PROBABILITY_TOLERANCE
    )
    assert answer["model"] == MODELS["classify"] and answer["batch_size"] == 1
    assert set(answer["timings"]) == {"queue_ms", "compute_ms", "total_ms"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_detections_are_the_models_boxes_scaled_to_the_original_image(served, transport):
    client, settings = served
    png = load_samples().scenes[0].png
    outputs, (manifest, decoded) = _model_outputs(MODELS["detect"], png, settings)
    width, height = decoded.original_size
    model_height, model_width = model_image_size(manifest)
    scores = outputs["scores"][0]
    keep = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= 0.3][:100]

    answer = _post(client, "/v1/detect", MODELS["detect"], png, transport)

    (result,) = answer["results"]
    assert (result["width"], result["height"]) == (width, height)
    assert [d["index"] for d in result["detections"]] == [int(outputs["labels"][0][i]) for i in keep]
    scale = np.array([width / model_width, height / model_height] * 2)
    for detection, i in zip(result["detections"], keep, strict=True):
        expected_box = np.clip(outputs["boxes"][0][i].astype(np.float64) * scale, 0, [width, height] * 2)
        np.testing.assert_allclose(detection["box"], expected_box, atol=1e-3)
        assert detection["score"] == pytest.approx(float(scores[i]), abs=PROBABILITY_TOLERANCE)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_segmentation_is_the_mask_of_the_models_logits(served, transport):
    client, settings = served
    png = load_samples().scenes[0].png
    outputs, (manifest, decoded) = _model_outputs(MODELS["segment"], png, settings)
    (expected,) = segment(outputs, manifest, [decoded], None, Deadline(float("inf")))

    answer = _post(client, "/v1/segment", MODELS["segment"], png, transport)

    (result,) = answer["results"]
    assert result["mask_png"] == expected["mask_png"]
    assert result["class_fractions"] == pytest.approx(expected["class_fractions"])
    assert (result["width"], result["height"], result["overlay_png"]) == (
        expected["width"],
        expected["height"],
        None,
    )


def test_answers_computed_in_a_batch_of_many_clients_are_the_lone_answers(served):
    client, _ = served
    images = [sample.png for sample in load_samples().images[:16]]
    alone = [_post(client, "/v1/classify", MODELS["classify"], png, "raw")["results"] for png in images]

    with ThreadPoolExecutor(len(images)) as clients:  # each waits on the app's own event loop
        batched = list(clients.map(lambda png: _post(client, "/v1/classify", MODELS["classify"], png, "raw"), images))
    assert max(answer["batch_size"] for answer in batched) > 1  # they did share batches
    for lone, answer in zip(alone, batched, strict=True):
        assert [e["label"] for e in answer["results"][0]["top_k"]] == [e["label"] for e in lone[0]["top_k"]]
        np.testing.assert_allclose(
            [e["probability"] for e in answer["results"][0]["top_k"]],
            [e["probability"] for e in lone[0]["top_k"]],
            atol=PROBABILITY_TOLERANCE,
        )
