"""The Ray Serve tests: real local Ray clusters (no mocks), one per test module.

Each module starts its own cluster (`ray.init` or Ray's `cluster_utils.Cluster`) and Serve, and
shuts both down at its end, so the modules can run in any order; keep them few and small (CI
runs them on 2 cores). `-m ray` selects them, `-m "not ray"` leaves them out.
"""

from __future__ import annotations

import os
import threading

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts a local Ray cluster (tests/ray; needs easerve[ray])")


@pytest.fixture(scope="session", autouse=True)
def isolated_environment():
    """No EASERVE_* variable of the machine leaks into the tests' settings (nor into the Ray
    workers, which inherit this process's environment)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("EASERVE_")]:
            patch.delenv(name)
        yield


@pytest.fixture(scope="module", autouse=True)
def no_serve_handle_in_the_test_process():
    """A Serve handle used here would start Serve's router thread in this process; it outlives
    `ray.shutdown()` and later exits the whole test run (status 1, no report) when it touches
    Ray. Handles are used in driver processes of their own (`ray_helpers.described_replicas`)."""
    yield
    routers = [thread.name for thread in threading.enumerate() if "_run_router_event_loop" in thread.name]
    assert not routers, f"a Serve handle was used in the test process: {routers}"
