"""Fixtures of the service tests: the fixture models on disk and a ready in-process app."""

from __future__ import annotations

import os

import pytest
from onnx_fixtures import write_all_models
from service_helpers import LIMITS, TestClient, make_settings, wait_until

from easerve.service.app import create_app


@pytest.fixture(scope="session", autouse=True)
def isolated_environment():
    """No EASERVE_* variable of the machine leaks into the tests' settings."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("EASERVE_")]:
            patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights")
    write_all_models(directory)
    return directory


@pytest.fixture(scope="session")
def client(weights_dir):
    """Every fixture model (EA and SA) served in-process, ready."""
    app = create_app(make_settings(weights_dir, **LIMITS))
    with TestClient(app) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200, what="readiness")
        yield test_client


@pytest.fixture
def worker_hops(monkeypatch):
    """The names of the functions requests send to a worker thread (`InferenceContext.offload`),
    in order: an answer's `Finish` sent there shows as `applied`."""
    from easerve.service.inference import InferenceContext

    hops: list[str] = []
    offload = InferenceContext.offload

    async def counted(self, function, *args, **kwargs):
        hops.append(getattr(function, "__name__", repr(function)))
        return await offload(self, function, *args, **kwargs)

    monkeypatch.setattr(InferenceContext, "offload", counted)
    return hops
