"""The model's working memory, measured at export, is charged at admission and given back after a
large run: self-attention's grows with the square of the positions, External Attention's does
not. Served from copies of the bundled models on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_helpers import LiveServer, SlowRunnerFactory, image_bytes, make_settings, rss_mb, wait_until

from easerve.artifacts.manifest import Manifest, load_manifest
from easerve.artifacts.memory_model import fit_memory_model
from easerve.service.admission import MB
from easerve.service.app import create_app
from easerve.service.contract import served_working_bytes, tensors_working_bytes
from easerve.service.v2.binary import HEADER_LENGTH

BUNDLED = Path(__file__).resolve().parents[2] / "weights"
# EA/SA twins whose attention runs over enough positions for the square to show (eadet's
# backbone downsamples by 32: 1024 tokens at 1024 x 1024, a 4 MB attention matrix).
TWINS = ["pct", "pctpart", "eanet"]
V1_MODELS = ["eamlp-sa-tiny", "eanet-sa-tiny", "pct-sa-tiny", "eagan-sa-tiny"]
# Under every bundled SA model's working memory at its v1 size, over what decoding costs.
V1_LIMIT_MB = 1.0


def quadratic_share(manifest: Manifest) -> float:
    """The share of the n² term in the predicted memory at the largest size measured."""
    memory = manifest.memory
    assert memory is not None, f"{manifest.name}: no memory model; run `easerve export {manifest.name} --memory-only`"
    n = memory.sizes[-1]
    return memory.bytes_per_position_squared * n * n / memory.item_bytes(n)


@pytest.mark.parametrize("arch", TWINS)
def test_the_bundled_sa_twin_needs_memory_quadratic_in_its_positions_and_the_ea_twin_linear(arch):
    sa, ea = (load_manifest(BUNDLED / f"{arch}-{kind}-tiny") for kind in ("sa", "ea"))
    assert quadratic_share(sa) > 0.8, sa.memory
    assert quadratic_share(ea) < 0.5, ea.memory
    largest = sa.memory.sizes[-1]
    # Twice the positions: SA nearly four times the memory, EA far less.
    assert sa.memory.item_bytes(2 * largest) > 3.5 * sa.memory.item_bytes(largest)
    assert ea.memory.item_bytes(2 * largest) < 3.0 * ea.memory.item_bytes(largest)
    # The fit is an upper envelope of what was measured.
    for memory in (sa.memory, ea.memory):
        assert all(memory.item_bytes(n) >= b for n, b in zip(memory.sizes, memory.measured_bytes, strict=True))


def test_the_fit_recovers_non_negative_coefficients_and_covers_every_measurement():
    sizes = [512, 1024, 2048, 4096, 8192]
    quadratic = fit_memory_model("points", sizes, [int(1e6 + 4000 * n + 5 * n * n) for n in sizes], "synthetic")
    assert quadratic.bytes_per_position_squared == pytest.approx(5, rel=0.01)
    linear = fit_memory_model("points", sizes, [int(2e6 + 6000 * n) for n in sizes], "synthetic")
    assert linear.bytes_per_position_squared < 1e-3 and linear.bytes_per_position == pytest.approx(6000, rel=0.01)
    # Falling measurements would want a negative slope: the coefficients stay >= 0.
    falling = fit_memory_model("points", sizes, [9_000_000, 8_000_000, 7_000_000, 6_000_000, 5_000_000], "noise")
    assert min(falling.constant_bytes, falling.bytes_per_position, falling.bytes_per_position_squared) >= 0
    assert falling.item_bytes(512) >= 9_000_000
    fixed = fit_memory_model("fixed", [1], [1_500_000], "one size")
    assert fixed.item_bytes(1) == 1_500_000 and fixed.item_bytes(10**6) == 1_500_000


def test_one_memory_model_covers_every_graph_of_a_model_the_larger_peak_at_each_size(monkeypatch):
    from easerve.export import memory_profile

    peaks = {"model.onnx": [4, 7, 12, 25, 48], "model.int8.onnx": [5, 6, 12, 26, 50]}
    monkeypatch.setattr(memory_profile, "_measured_peaks", lambda path, planned: [p * MB for p in peaks[path.name]])
    manifest = load_manifest(BUNDLED / "pct-ea-tiny")
    memory = memory_profile.measure_memory(
        [Path("model.onnx"), Path("model.int8.onnx")], manifest.inputs, manifest.preprocessing
    )
    assert memory.measured_bytes == [p * MB for p in (5, 7, 12, 26, 50)]
    assert "model.onnx, model.int8.onnx" in memory.method


def test_every_bundled_memory_model_was_measured_on_every_graph_the_model_serves():
    for directory in sorted(BUNDLED.glob("*/manifest.json")):
        manifest = load_manifest(directory.parent)
        graphs = [manifest.onnx.path, *(variant.file.path for variant in manifest.quantized)]
        assert manifest.memory is not None, manifest.name
        assert f"({', '.join(graphs)})" in manifest.memory.method, (manifest.name, manifest.memory.method)


def test_a_manifest_without_a_memory_model_loads_and_charges_nothing_for_the_model():
    document = json.loads((BUNDLED / "pct-sa-tiny" / "manifest.json").read_text())
    assert "memory" in document
    del document["memory"]
    old = Manifest.model_validate(document)
    assert old.memory is None
    assert served_working_bytes(old, 4) == 0 and tensors_working_bytes(old, {"points": (1, 8192, 3)}) == 0
    new = load_manifest(BUNDLED / "pct-sa-tiny")
    assert served_working_bytes(new, 4) == 4 * new.memory.item_bytes(new.preprocessing.num_points)
    assert tensors_working_bytes(new, {"points": (2, 8192, 3)}) == 2 * new.memory.item_bytes(8192)


# -- served ------------------------------------------------------------------------------------


def copied_weights(target: Path, names: list[str], with_memory: bool) -> Path:
    """Copies of the bundled models' manifests and graphs; `with_memory` False strips the memory
    model, as a manifest exported before it was measured."""
    for name in names:
        folder = target / name
        folder.mkdir(parents=True)
        manifest = json.loads((BUNDLED / name / "manifest.json").read_text())
        if not with_memory:
            manifest.pop("memory", None)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        shutil.copy(BUNDLED / name / manifest["onnx"]["path"], folder)
    return target


def binary_v2(points: int) -> tuple[bytes, dict[str, str]]:
    """A v2 binary request of one cloud of `points` points."""
    blob = np.random.default_rng(0).standard_normal((1, points, 3)).astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "points",
                    "shape": [1, points, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    return header + blob, {HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def twins_server(tmp_path_factory):
    weights = copied_weights(tmp_path_factory.mktemp("twins"), ["pct-sa-tiny", "pct-ea-tiny"], True)
    settings = make_settings(weights, request_memory_mb=128, server_memory_mb=1536)
    with LiveServer(create_app(settings)) as server:
        yield server


def test_a_v2_cloud_of_8192_points_is_413_for_the_sa_twin_and_answered_by_the_ea_twin(twins_server):
    sa, ea = (load_manifest(BUNDLED / f"pct-{kind}-tiny") for kind in ("sa", "ea"))
    assert sa.memory.item_bytes(8192) > 128 * MB > 2 * ea.memory.item_bytes(8192)
    body, headers = binary_v2(8192)
    refused = httpx.post(f"{twins_server.url}/v2/models/pct-sa-tiny/infer", content=body, headers=headers, timeout=60)
    assert refused.status_code == 413, refused.text
    assert "working memory" in refused.json()["error"]
    answered = httpx.post(f"{twins_server.url}/v2/models/pct-ea-tiny/infer", content=body, headers=headers, timeout=60)
    assert answered.status_code == 200, answered.text


PNG_BODY = {"content": image_bytes((200, 30, 30), (16, 16)), "headers": {"content-type": "image/png"}}
V1_REQUESTS = {
    "eamlp-sa-tiny": ("/v1/classify?model=eamlp-sa-tiny", PNG_BODY),
    "eanet-sa-tiny": ("/v1/segment?model=eanet-sa-tiny", PNG_BODY),
    "pct-sa-tiny": (
        "/v1/pointcloud/classify?model=pct-sa-tiny",
        {"json": {"points": np.random.default_rng(1).standard_normal((600, 3)).round(3).tolist()}},
    ),
    "eagan-sa-tiny": ("/v1/generate?model=eagan-sa-tiny", {"json": {"label": 1, "seed": 3}}),
}


@pytest.fixture(scope="module", params=[True, False], ids=["measured", "old-manifest"])
def v1_server(request, tmp_path_factory):
    weights = copied_weights(tmp_path_factory.mktemp("v1"), V1_MODELS, request.param)
    settings = make_settings(weights, request_memory_mb=V1_LIMIT_MB)
    with LiveServer(create_app(settings)) as server:
        yield request.param, server


@pytest.mark.parametrize("model", V1_MODELS)
def test_v1_routes_charge_the_models_memory_at_its_own_size(v1_server, model):
    measured, server = v1_server
    manifest = load_manifest(BUNDLED / model)
    assert served_working_bytes(manifest, 1) > V1_LIMIT_MB * MB, manifest.memory
    path, request = V1_REQUESTS[model]
    answer = httpx.post(f"{server.url}{path}", timeout=60, **request)
    if measured:
        assert answer.status_code == 413 and "working memory" in answer.json()["error"], answer.text
    else:  # an old manifest: charged as before (decoding only), so served
        assert answer.status_code == 200, answer.text


def test_an_old_manifest_serves_a_v2_cloud_its_measured_twin_would_refuse(v1_server):
    measured, server = v1_server
    body, headers = binary_v2(1024)
    answer = httpx.post(f"{server.url}/v2/models/pct-sa-tiny/infer", content=body, headers=headers, timeout=60)
    assert answer.status_code == (413 if measured else 200), answer.text


# -- concurrency and giving memory back ----------------------------------------------------------


@pytest.fixture(scope="module")
def gated_sa_server(tmp_path_factory):
    weights = copied_weights(tmp_path_factory.mktemp("gated"), ["pct-sa-tiny"], True)
    settings = make_settings(weights, request_memory_mb=512, server_memory_mb=600, max_queue_delay_ms=1)
    factory = SlowRunnerFactory(settings, delay_s=0.0)
    with LiveServer(create_app(settings, runner_factory=factory)) as server:
        yield server, factory.runners["pct-sa-tiny"]


def test_sa_requests_in_flight_past_the_server_budget_get_503_with_retry_after(gated_sa_server):
    server, runner = gated_sa_server
    body, headers = binary_v2(8192)
    url = f"{server.url}/v2/models/pct-sa-tiny/infer"

    async def scenario():
        async with httpx.AsyncClient(timeout=60) as client:
            first = asyncio.ensure_future(client.post(url, content=body, headers=headers))
            await asyncio.to_thread(runner.computing.wait, 10)
            assert runner.computing.is_set(), "the first request never reached the model"
            second = await client.post(url, content=body, headers=headers)
            runner.gate.set()
            return await first, second

    runner.gate.clear()
    runner.computing.clear()
    try:
        first, second = asyncio.run(scenario())
    finally:
        runner.gate.set()
    assert first.status_code == 200, first.text
    assert second.status_code == 503, second.text
    assert second.headers["retry-after"] == "1" and "in flight" in second.json()["error"]


def test_memory_of_a_large_sa_run_is_given_back(tmp_path):
    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc/self/status to read the RSS from")
    weights = copied_weights(tmp_path, ["pct-sa-tiny"], True)
    settings = make_settings(weights, request_memory_mb=512, server_memory_mb=600)
    predicted = load_manifest(BUNDLED / "pct-sa-tiny").memory.item_bytes(8192) / MB
    body, headers = binary_v2(8192)
    with LiveServer(create_app(settings)) as server:
        idle = rss_mb()
        answer = httpx.post(f"{server.url}/v2/models/pct-sa-tiny/infer", content=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        # Without shrinking the arena, about the run's whole working memory stays resident.
        wait_until(
            lambda: rss_mb() - idle < predicted / 4,
            10,
            f"RSS back near {idle:.0f} MB after a run predicted at {predicted:.0f} MB, now {rss_mb():.0f} MB",
        )


class RecordingRunner:
    """Records the batch size of every run; answers nothing (warm-up reads no output)."""

    backend = "recording"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(next(iter(inputs.values())).shape[0])
        return {}

    def close(self) -> None:
        pass


def test_warm_up_stops_at_the_largest_batch_the_memory_budget_could_admit():
    from easerve.service.model_config import serving_config
    from easerve.service.model_files import discover_models
    from easerve.service.model_loading import largest_warm_batch, prepare_runners
    from easerve.service.repository import ServedModel
    from easerve.service.settings import Settings

    (files,) = discover_models([BUNDLED], ["eanet-sa-tiny"])
    per_item = served_working_bytes(files.manifest, 1)
    assert per_item > 0
    assert largest_warm_batch(files, 32, 5 * per_item + 1) == 5
    assert largest_warm_batch(files, 32, 10**15) == 32
    assert largest_warm_batch(files, 32, 1) == 1  # one item always runs
    model = ServedModel(files, serving_config(files.name, files.directory, 32, Settings(), {}))
    runners: list[RecordingRunner] = []

    def factory(model_files, max_batch_size):
        runners.append(RecordingRunner())
        return runners[-1]

    prepare_runners(model, factory, memory_bytes=5 * per_item + 1)
    assert max(runners[0].batches) == 5  # warmed and profiled up to 5, never at 32
    assert model.latency is not None and model.latency.predict(32) > model.latency.predict(5)


def test_the_models_memory_counts_against_the_budget_but_not_toward_the_heavy_worker_pool():
    import threading
    import time as clock

    from easerve.service.admission import MemoryBudget, WorkerPools
    from easerve.service.contract import InputLimits
    from easerve.service.deadline import Deadline
    from easerve.service.inference import InferenceContext
    from easerve.service.settings import Settings

    pools = WorkerPools.from_settings(Settings())
    budget = MemoryBudget(10_000 * MB, 10_000 * MB, MB, lambda: None)
    now = clock.perf_counter()
    context = InferenceContext(None, now, Deadline(now + 5), pools, budget, InputLimits(1, 1, 1))
    context.admit(MB, "a small image", model_bytes=4 * pools.heavy_bytes)  # an SA model at a large size
    assert budget.in_flight_bytes == MB + 4 * pools.heavy_bytes

    def thread() -> str:
        return threading.current_thread().name

    assert asyncio.run(context.offload(thread)).startswith("easerve-worker")  # a small image: the light pool
    context.admit(2 * pools.heavy_bytes, "a large image")
    assert asyncio.run(context.offload(thread)).startswith("easerve-heavy")
    context.finish()
    pools.shutdown()
