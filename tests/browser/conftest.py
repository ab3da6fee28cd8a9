"""Fixtures of the browser tests (helpers: browser_helpers.py). Skipped, with the reason, where
chromium, chromedriver or selenium is missing; CI installs them (`apt-get install chromium
chromium-driver`, `pip install -e .[browser]`)."""

from __future__ import annotations

import os

import pytest
from browser_helpers import MISSING, BundledServer, new_driver


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the web console in a headless Chromium")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "browser" in item.keywords and MISSING:
            item.add_marker(pytest.mark.skip(reason=MISSING))


@pytest.fixture(scope="session", autouse=True)
def isolated_environment():
    """No EASERVE_* variable of the machine leaks into the served settings (EASERVE_TEST_* are the
    tests' own)."""
    served = [name for name in os.environ if name.startswith("EASERVE_") and not name.startswith("EASERVE_TEST_")]
    with pytest.MonkeyPatch.context() as patch:
        for name in served:
            patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def console_server():
    """Every bundled model, served on a loopback port."""
    with BundledServer() as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    driver = new_driver()
    yield driver
    driver.quit()
