"""What the browser tests share: where Chromium and its driver are (or why the tests skip), the
bundled models served on a loopback port, a headless Chromium driven by selenium through Debian's
chromedriver (no browser is downloaded), and the checks of its console and screenshots."""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from service_helpers import LiveServer, make_settings, wait_until  # noqa: E402

from easerve.service.app import create_app  # noqa: E402

BUNDLED_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
CHROMIUM = os.environ.get("EASERVE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("EASERVE_TEST_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
LOAD_TIMEOUT_S = 180.0
WINDOW = (1280, 900)  # a laptop's width


def _missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
    if not Path(CHROMEDRIVER).is_file():
        return f"no chromedriver at {CHROMEDRIVER} (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[browser])"
    if not (BUNDLED_WEIGHTS / "eamlp-ea-tiny" / "manifest.json").is_file():
        return "no bundled models in weights/"
    return None


MISSING = _missing()


class BundledServer(LiveServer):
    """LiveServer with the time the bundled models take to load and warm up on a small machine."""

    def __init__(self, **overrides) -> None:
        super().__init__(create_app(make_settings(BUNDLED_WEIGHTS, **overrides)))

    def __enter__(self) -> BundledServer:
        self.thread.start()
        wait_until(lambda: self.server.started, what="server start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{self.url}/readyz").status_code == 200, LOAD_TIMEOUT_S, "readiness")
        return self


def new_driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    return driver


def console_errors(driver) -> list[dict]:
    """The browser's console messages since the last call that are errors."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def check_screenshot(driver, path: Path) -> Path:
    """Save a screenshot to `path` and check that it holds a picture, not a blank page."""
    from PIL import Image, ImageStat

    driver.save_screenshot(str(path))
    assert path.stat().st_size > 5_000, f"{path} is only {path.stat().st_size} bytes"
    image = Image.open(io.BytesIO(path.read_bytes())).convert("L")
    assert image.size[0] >= 800, image.size
    assert max(ImageStat.Stat(image).var) > 100, f"{path} is (nearly) one flat colour"
    return path
