"""The web console in a real headless Chromium, against the bundled models served on a loopback
port: the page loads clean, every task's answer is drawn as the API gave it, EA beside SA, the
cost-against-resolution sweep, the live server panel, the server's errors and the API key."""

from __future__ import annotations

import io
import os
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from browser_helpers import WINDOW, BundledServer, check_screenshot, console_errors, new_driver

from easerve.loadtest.samples import SAMPLES_DIR

pytestmark = pytest.mark.browser

WAIT_S = 60.0
# The browser logs every 4xx/5xx resource it fetched as an error; the error tests expect theirs.
RESOURCE_ERROR = "Failed to load resource"
SCREENSHOTS_ENV = "EASERVE_TEST_CONSOLE_SCREENSHOTS"


def wait_for(driver, script: str, what: str, timeout: float = WAIT_S):
    """The first truthy value of the JavaScript expression `script`."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script(f"return {script}"), message=f"waiting for {what}"
    )


def open_console(driver, url: str, tab: str = "try") -> None:
    driver.get(f"{url}/#{tab}")  # / redirects to /ui/, the fragment stays
    wait_for(driver, "document.body.dataset.ready === 'true'", "the console to start")
    wait_for(driver, f"!document.getElementById('tab-{tab}').hidden", f"the {tab} tab")


def no_horizontal_scroll(driver) -> bool:
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def choose_task(driver, panel: str, task: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", f"{panel}-task")).select_by_value(task)


def use_input(driver, panel: str, sample: str, upload: bool) -> None:
    """The bundled `sample` as the panel's input: its sample button, or uploaded through the file
    chooser as a person would."""
    status = f"#{panel}-input .input-status"
    wait_for(driver, f"document.querySelector('{status}')?.dataset.input", "the first sample to load")
    if upload:
        driver.find_element("css selector", f"#{panel}-input input[type=file]").send_keys(str(SAMPLES_DIR / sample))
    else:
        driver.find_element("css selector", f"#{panel}-input button[data-sample='{sample}']").click()
    wait_for(driver, f"document.querySelector('{status}').dataset.input === '{sample}'", f"{sample} to be the input")


def run_and_wait(driver, button: str, result: str) -> str:
    driver.execute_script(f"document.getElementById('{result}').dataset.state = 'empty'")
    driver.find_element("id", button).click()
    return wait_for(
        driver,
        f"['done', 'error'].includes(document.getElementById('{result}').dataset.state) && "
        f"document.getElementById('{result}').dataset.state",
        f"the answer in #{result}",
    )


def set_field(driver, container: str, name: str, value) -> None:
    driver.execute_script(
        "const f = document.querySelector(arguments[0]); f.value = arguments[1];"
        "f.dispatchEvent(new Event('input')); f.dispatchEvent(new Event('change'));",
        f"#{container} [name='{name}']",
        str(value),
    )


def api(server, path: str, **request) -> dict:
    response = httpx.post(f"{server.url}{path}", timeout=30, **request)
    assert response.status_code == 200, response.text
    return response.json()


def sample_bytes(name: str) -> bytes:
    return (SAMPLES_DIR / name).read_bytes()


def png_post(name: str) -> dict:
    return {"content": sample_bytes(name), "headers": {"content-type": "image/png"}}


def npy_post(name: str) -> dict:
    return {"content": sample_bytes(name), "headers": {"content-type": "application/octet-stream"}}


def requests_total(server, model: str) -> int:
    """Inference requests `model` has answered, all status codes, from /metrics."""
    pattern = re.compile(rf'^easerve_http_requests_total{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$', re.M)
    return int(sum(float(value) for value in pattern.findall(httpx.get(f"{server.url}/metrics").text)))


@pytest.fixture
def page(console_server, browser):
    """The console, open; after the test, no error in the browser's console."""
    open_console(browser, console_server.url)
    yield browser
    assert console_errors(browser) == []


def test_the_page_loads_clean_at_a_laptops_width(console_server, browser, tmp_path):
    browser.get(console_server.url)
    assert browser.current_url == f"{console_server.url}/ui/"
    wait_for(browser, "document.body.dataset.ready === 'true'", "the console to start")
    assert browser.title == "easerve console"
    wait_for(browser, "document.getElementById('server-phase').dataset.phase === 'ready'", "the ready badge")
    assert browser.get_window_size()["width"] == WINDOW[0]
    for tab in ("try", "compare", "server"):
        open_console(browser, console_server.url, tab)
        assert no_horizontal_scroll(browser), f"the {tab} tab is wider than {WINDOW[0]} px"
    check_screenshot(browser, tmp_path / "console.png")
    assert console_errors(browser) == []


def test_classification_shows_the_predicted_class_of_a_drawn_circle(console_server, page, tmp_path):
    expected = api(console_server, "/v1/classify?top_k=5", **png_post("image-circle.png"))["results"][0]["top_k"]
    assert expected[0]["label"] == "circle"
    choose_task(page, "try", "classify")
    use_input(page, "try", "image-circle.png", upload=False)
    assert run_and_wait(page, "try-run", "try-result") == "done"
    shown = page.execute_script(
        "return [document.querySelector('#try-result .prediction').dataset.label,"
        " [...document.querySelectorAll('#try-result .bar-row')].map(r => r.dataset.label)]"
    )
    assert shown == ["circle", [entry["label"] for entry in expected]]
    check_screenshot(page, tmp_path / "classify.png")


def test_detection_draws_a_box_per_detection(console_server, page, tmp_path):
    expected = api(console_server, "/v1/detect", **png_post("scene-0.png"))["results"][0]["detections"]
    assert expected
    choose_task(page, "try", "detect")
    use_input(page, "try", "scene-0.png", upload=True)
    assert run_and_wait(page, "try-run", "try-result") == "done"
    labels = page.execute_script(
        "return [...document.querySelectorAll('#try-result .det-box')].map(b => b.dataset.label)"
    )
    assert labels == [detection["label"] for detection in expected]
    # Each box lies over the image, where the API put it.
    first = page.execute_script(
        "const img = document.querySelector('#try-result .image-frame img').getBoundingClientRect();"
        "const box = document.querySelector('#try-result .det-box').getBoundingClientRect();"
        "return [(box.left - img.left) / img.width, (box.top - img.top) / img.height, img.width > 0]"
    )
    x1, y1 = expected[0]["box"][:2]
    assert first[2] and abs(first[0] - x1 / 128) < 0.03 and abs(first[1] - y1 / 128) < 0.03, first
    check_screenshot(page, tmp_path / "detect.png")


def test_instances_are_drawn_in_their_own_colours_with_labels(console_server, page, tmp_path):
    expected = api(console_server, "/v1/segment/instances?overlay=true", **png_post("scene-0.png"))["results"][0]
    assert expected["instances"]
    choose_task(page, "try", "segment-instances")
    use_input(page, "try", "scene-0.png", upload=True)
    assert run_and_wait(page, "try-run", "try-result") == "done"
    overlay = page.execute_script(
        "const img = document.querySelector('#try-result img.inst-overlay');"
        "return img && img.complete && [img.naturalWidth, img.naturalHeight]"
    )
    assert overlay == [expected["width"], expected["height"]]
    drawn = page.execute_script(
        "return [...document.querySelectorAll('#try-result .inst-box')]"
        ".map(b => [b.dataset.label, getComputedStyle(b).borderTopColor])"
    )
    assert [label for label, _ in drawn] == [instance["label"] for instance in expected["instances"]]
    assert len({colour for _, colour in drawn}) == len(drawn), drawn
    rows = page.execute_script(
        "return [...document.querySelectorAll('#try-result .instance-row')].map(r => r.dataset.label)"
    )
    assert rows == [instance["label"] for instance in expected["instances"]]
    check_screenshot(page, tmp_path / "instances.png")


def compare_twins(page, url: str, task: str, sample: str) -> list[str]:
    """Run the compare tab on `task` and `sample`; the models that answered, EA then SA."""
    open_console(page, url, "compare")
    choose_task(page, "compare", task)
    use_input(page, "compare", sample, upload=False)
    page.find_element("id", "compare-run").click()
    for attention in ("ea", "sa"):
        wait_for(page, f"document.getElementById('compare-{attention}').dataset.state === 'done'", attention)
    return page.execute_script(
        "return ['ea', 'sa'].map(a => document.querySelector(`#compare-${a} .answer`).dataset.model)"
    )


def test_instances_of_ea_and_sa_side_by_side(console_server, page, tmp_path):
    models = compare_twins(page, console_server.url, "segment-instances", "scene-1.png")
    assert models == ["eainst-ea-tiny", "eainst-sa-tiny"]
    assert page.execute_script("return document.querySelectorAll('.result img.inst-overlay').length") >= 2
    check_screenshot(page, tmp_path / "compare-instances.png")


def test_segmentation_overlays_the_mask_with_a_legend(console_server, page, tmp_path):
    expected = api(console_server, "/v1/segment?overlay=true", **png_post("scene-1.png"))["results"][0]
    present = [label for label, fraction in expected["class_fractions"].items() if fraction > 0]
    choose_task(page, "try", "segment")
    use_input(page, "try", "scene-1.png", upload=False)
    assert run_and_wait(page, "try-run", "try-result") == "done"
    overlay = page.execute_script(
        "const img = document.querySelector('#try-result img.seg-overlay');"
        "return img && img.complete && [img.naturalWidth, img.naturalHeight]"
    )
    assert overlay == [expected["width"], expected["height"]]
    legend = page.execute_script(
        "return [...document.querySelectorAll('#try-result .seg-legend .legend-row')].map(r => r.dataset.label)"
    )
    assert sorted(legend) == sorted(present)
    check_screenshot(page, tmp_path / "segment.png")
    # The mask view: the class indices coloured, at the image's size.
    page.find_element("css selector", "#try-result .toggle button[data-view='mask']").click()
    size = wait_for(page, "document.querySelector('#try-result canvas.seg-mask')?.width", "the mask view")
    assert size == expected["width"]


def test_generation_shows_a_grid_of_the_class_and_seed(console_server, page, tmp_path):
    request = {"label": "star", "seed": 3, "n": 4}
    expected = api(console_server, "/v1/generate", json=request)["images"]
    choose_task(page, "try", "generate")
    wait_for(page, "document.querySelector('#try-options [name=label] option[value=star]')", "the class list")
    for name, value in request.items():
        set_field(page, "try-options", name, value)
    assert run_and_wait(page, "try-run", "try-result") == "done"
    images = page.execute_script(
        "return [...document.querySelectorAll('#try-result img.gen-image')].map(i => [i.src, i.naturalWidth])"
    )
    assert [src.split(",", 1)[1] for src, _ in images] == expected
    assert all(width == 32 for _, width in images)
    check_screenshot(page, tmp_path / "generate.png")


def test_point_cloud_classification_draws_the_cloud_and_its_class(console_server, page, tmp_path):
    expected = api(console_server, "/v1/pointcloud/classify", **npy_post("cloud-cone.npy"))
    choose_task(page, "try", "pointcloud-classify")
    use_input(page, "try", "cloud-cone.npy", upload=True)
    assert run_and_wait(page, "try-run", "try-result") == "done"
    label = page.execute_script("return document.querySelector('#try-result .prediction').dataset.label")
    assert label == expected["top_k"][0]["label"] == "cone"
    points = wait_for(page, "document.querySelector('#try-result canvas.cloud-view')?.dataset.points", "the 3-D view")
    assert int(points) == expected["num_points"]
    check_screenshot(page, tmp_path / "pointcloud-classify.png")


def test_point_cloud_parts_are_drawn_in_3d_and_turn_with_the_mouse(console_server, page, tmp_path):
    from selenium.webdriver import ActionChains

    expected = api(console_server, "/v1/pointcloud/segment", **npy_post("cloud-torus.npy"))
    choose_task(page, "try", "pointcloud-segment")
    use_input(page, "try", "cloud-torus.npy", upload=False)
    assert run_and_wait(page, "try-run", "try-result") == "done"
    canvas_script = "document.querySelector('#try-result canvas.cloud-view')"
    assert int(wait_for(page, f"{canvas_script}?.dataset.drawn", "the 3-D view")) >= 1
    legend = page.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#try-result .legend-row')]"
        ".map(r => [r.dataset.label, parseInt(r.querySelector('.bar-value').textContent)]))"
    )
    assert legend == dict(Counter(expected["parts"]))
    before = page.get_screenshot_as_png()
    drawn = int(page.execute_script(f"return {canvas_script}.dataset.drawn"))
    canvas = page.find_element("css selector", "#try-result canvas.cloud-view")
    ActionChains(page).click_and_hold(canvas).move_by_offset(80, 30).release().perform()
    page.execute_script(f"{canvas_script}.dispatchEvent(new WheelEvent('wheel', {{deltaY: -300, cancelable: true}}))")
    wait_for(page, f"parseInt({canvas_script}.dataset.drawn) > {drawn}", "the view to turn")
    assert page.get_screenshot_as_png() != before
    check_screenshot(page, tmp_path / "pointcloud-segment.png")


def test_ea_and_sa_answer_side_by_side(console_server, page, tmp_path):
    models = compare_twins(page, console_server.url, "segment", "scene-0.png")
    assert models == ["eanet-ea-tiny", "eanet-sa-tiny"]
    wait_for(page, "document.getElementById('compare-timings').dataset.state === 'done'", "the timings")
    rows = page.execute_script(
        "return [...document.querySelectorAll('#compare-timings tr[data-timing]')].map(r => r.dataset.timing)"
    )
    assert rows == ["round trip", "compute", "queue", "total (server)"]
    assert page.execute_script("return document.querySelectorAll('.result img.seg-overlay').length") >= 2
    check_screenshot(page, tmp_path / "compare.png")


def test_ea_and_sa_are_timed_over_rounds_one_at_a_time(console_server, page):
    from selenium.webdriver.support.ui import Select

    open_console(page, console_server.url, "compare")
    choose_task(page, "compare", "segment")
    use_input(page, "compare", "scene-0.png", upload=False)
    assert Select(page.find_element("id", "compare-repeats")).first_selected_option.text == "5"
    Select(page.find_element("id", "compare-repeats")).select_by_value("10")
    twins = ["eanet-ea-tiny", "eanet-sa-tiny"]
    before = [requests_total(console_server, model) for model in twins]
    # Every inference request the page sends, and how many were in flight at once; every round
    # count the timings showed.
    page.execute_script(
        "window.sent = []; window.inFlight = 0; window.mostInFlight = 0; window.realFetch = window.fetch;"
        "window.fetch = async (url, options) => {"
        "  const u = new URL(url, location.href);"
        "  if (!u.pathname.endsWith('/v1/segment')) return window.realFetch(url, options);"
        "  window.sent.push(u.searchParams.get('attention'));"
        "  window.mostInFlight = Math.max(window.mostInFlight, ++window.inFlight);"
        "  try { return await window.realFetch(url, options); } finally { window.inFlight--; }"
        "};"
        "window.rounds = [];"
        "new MutationObserver(() => window.rounds.push(document.getElementById('compare-timings').dataset.rounds))"
        "  .observe(document.getElementById('compare-timings'), {attributes: true, attributeFilter: ['data-rounds']});"
    )
    try:
        page.find_element("id", "compare-run").click()
        wait_for(page, "document.getElementById('compare-timings').dataset.state === 'done'", "ten rounds")
        sent, most, rounds = page.execute_script("return [window.sent, window.mostInFlight, window.rounds]")
    finally:
        page.execute_script("window.fetch = window.realFetch;")
    # One request at a time, EA and SA alternately, the order turned round every other round.
    assert most == 1
    assert sent == ["ea", "sa"] + ["sa", "ea", "ea", "sa"] * 4 + ["sa", "ea"]
    assert [requests_total(console_server, model) - count for model, count in zip(twins, before)] == [10, 10]
    assert rounds == [str(n) for n in range(1, 11)]  # the table grew round by round
    cells = page.execute_script(
        "return [...document.querySelectorAll('#compare-timings tr[data-timing]')].map(r => ["
        " r.dataset.timing, ...[...r.querySelectorAll('td[data-median]')].map(td =>"
        "  [+td.dataset.count, +td.dataset.min, +td.dataset.median, +td.dataset.max, td.textContent]),"
        " r.querySelector('td[data-ratio]').dataset.ratio, r.querySelector('td[data-ratio]').textContent])"
    )
    assert [row[0] for row in cells] == ["round trip", "compute", "queue", "total (server)"]
    for name, ea, sa, ratio, ratio_text in cells:
        for count, low, median, high, text in (ea, sa):
            assert count == 10 and 0 <= low <= median <= high, (name, ea, sa)
            assert text.endswith(")") and "ms (" in text and "–" in text, text  # "12.3 ms (10.1–15.2)"
        assert float(ratio) == pytest.approx(sa[2] / ea[2]) and ratio_text.endswith("×")
    compute = cells[1]
    assert compute[1][2] > 0 and compute[2][2] > 0
    heads = page.execute_script(
        "return [...document.querySelectorAll('#compare-timings th')].map(th => th.textContent)"
    )
    assert "EA · eanet-ea-tiny n = 10" in heads and "SA · eanet-sa-tiny n = 10" in heads
    # The pictures are the first round's answers.
    assert page.execute_script("return document.querySelectorAll('.compare-result img.seg-overlay').length") == 2


def test_a_long_request_shows_the_time_it_has_been_running(console_server, page):
    choose_task(page, "try", "classify")
    use_input(page, "try", "image-circle.png", upload=False)
    # The answer held back 2.5 s in the page, as a slow server would.
    page.execute_script(
        "window.realFetch = window.fetch;"
        "window.fetch = (url, options) => String(url).includes('/v1/classify')"
        "  ? new Promise(r => setTimeout(r, 2500)).then(() => window.realFetch(url, options))"
        "  : window.realFetch(url, options);"
    )
    try:
        page.execute_script("document.getElementById('try-result').dataset.state = 'empty'")
        page.find_element("id", "try-run").click()
        elapsed = "document.querySelector('#try-result .running .elapsed')"
        first = wait_for(
            page, f"{elapsed} && +{elapsed}.dataset.elapsedMs >= 300 && {elapsed}.dataset.elapsedMs", "the elapsed time"
        )
        text = page.execute_script("return document.querySelector('#try-result .running').textContent")
        assert re.fullmatch(r"running… \d+\.\d s", text), text
        later = wait_for(
            page,
            f"+{elapsed}?.dataset.elapsedMs >= {int(first) + 1000} && {elapsed}.dataset.elapsedMs",
            "the elapsed time to tick on",
        )
        assert int(later) > int(first)
        assert float(page.execute_script(f"return {elapsed}.textContent").split()[0]) >= 1.3
        wait_for(page, "document.getElementById('try-result').dataset.state === 'done'", "the answer")
        assert page.execute_script("return document.querySelector('#try-result .elapsed')") is None
    finally:
        page.execute_script("window.fetch = window.realFetch;")


def test_the_resolution_sweep_measures_both_twins_through_v2(console_server, page, tmp_path):
    open_console(page, console_server.url, "compare")
    for size in (256, 128):  # few and small: the page's own button goes up to 768
        set_field(page, "tab-compare", "sweep-size", size)
        wait_for(page, f"document.querySelector('#sweep-table tr[data-size=\"{size}\"]')", f"{size} px measured")
        wait_for(page, "document.getElementById('sweep-chart').dataset.state === 'done'", "the sweep")
    cells = page.execute_script(
        "return [...document.querySelectorAll('#sweep-table tr[data-size] td[data-attention]')]"
        ".map(td => parseFloat(td.textContent))"
    )
    assert len(cells) == 4 and all(ms > 0 for ms in cells), cells
    assert page.execute_script("return document.getElementById('sweep-chart').dataset.points") == "4"
    masks = page.execute_script("return ['ea', 'sa'].map(a => document.getElementById(`sweep-mask-${a}`).width)")
    assert masks == [128, 128]
    check_screenshot(page, tmp_path / "sweep.png")


def test_the_server_panel_lists_the_models_and_its_charts_move(console_server, page, tmp_path):
    served = len(httpx.get(f"{console_server.url}/v1/models").json()["models"])
    open_console(page, console_server.url, "server")
    wait_for(page, f"document.querySelectorAll('#models-table tr[data-model]').length === {served}", "the model table")
    states = page.execute_script(
        "return [...document.querySelectorAll('#models-table tr[data-model] .badge')].map(b => b.textContent)"
    )
    assert set(states) == {"ready"}
    scheduler = page.execute_script("return document.getElementById('server-scheduler').dataset.policy")
    assert scheduler == httpx.get(f"{console_server.url}/v1/models").json()["scheduler"]["policy"] == "slack"
    latency = page.execute_script(
        "return document.querySelector('#models-table tr[data-model=\"eamlp-ea-tiny\"] .latency').textContent"
    )
    assert "ms @1" in latency
    for _ in range(4):
        api(console_server, "/v1/classify?attention=sa", **png_post("image-star.png"))
    total = requests_total(console_server, "eamlp-sa-tiny")
    assert total >= 4
    row = "document.querySelector('#live-table tr[data-model=\"eamlp-sa-tiny\"]')"
    wait_for(page, f"{row} && parseInt({row}.dataset.total) >= {int(total)}", "the live table to count the requests")
    wait_for(page, "parseInt(document.querySelector('canvas[data-metric=rate]').dataset.points) > 0", "the rate chart")
    check_screenshot(page, tmp_path / "server.png")


def status_classes(server) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Per model, and summed, the inference answers so far by class (2xx, 4xx, 5xx) and the codes
    shown apart (429, 503, 504), from /metrics."""
    pattern = re.compile(r'^easerve_http_requests_total\{code="(\d+)",model="([^"]+)"\} (\S+)$', re.M)
    models: dict[str, Counter] = {}
    total: Counter = Counter()
    for code, model, value in pattern.findall(httpx.get(f"{server.url}/metrics").text):
        keys = [f"{code[0]}xx", "total"] + ([code] if code in ("429", "503", "504") else [])
        for counts in (models.setdefault(model, Counter()), total):
            for key in keys:
                counts[key] += int(float(value))
    return {model: dict(counts) for model, counts in models.items()}, dict(total)


STATUS_KEYS = ("total", "2xx", "4xx", "5xx", "429", "503", "504")


def shown_status_counts(driver, model: str | None) -> dict[str, int]:
    """The status table's counts of `model` (None: its row of all models); zeros without a row."""
    row = "tr[data-all]" if model is None else f'tr[data-model="{model}"]'
    shown = driver.execute_script(
        "const row = document.querySelector(arguments[0]);"
        "return row && Object.fromEntries([...row.querySelectorAll('td[data-code]')]"
        ".map(td => [td.dataset.code, parseInt(td.textContent)]))",
        f"#status-table {row}",
    )
    return shown or dict.fromkeys(STATUS_KEYS, 0)


def test_the_server_tab_counts_the_answers_by_status(console_server, page):
    from selenium.webdriver.support.ui import WebDriverWait

    open_console(page, console_server.url, "server")
    model, other = "eamlp-ea-tiny", "eadet-ea-tiny"

    def shown_as_served():
        """The table's rows once they show what /metrics counts, else None."""
        models, total = status_classes(console_server)
        rows = {name: shown_status_counts(page, name) for name in (model, other, None)}
        served = {name: models.get(name, {}) for name in (model, other)} | {None: total}
        expected = {name: {key: counts.get(key, 0) for key in STATUS_KEYS} for name, counts in served.items()}
        return rows if rows == expected else None

    def wait_shown():
        return WebDriverWait(page, WAIT_S, poll_frequency=0.2).until(
            lambda _: shown_as_served(), message="the status table to show what /metrics counts"
        )

    before = wait_shown()
    bad = {"content": b"not an image", "headers": {"content-type": "text/plain"}}
    for request in (bad, bad, {"content": b"x", "headers": {"content-type": "image/png"}}):
        assert httpx.post(f"{console_server.url}/v1/classify", **request).status_code in (400, 415)
    for _ in range(2):
        api(console_server, "/v1/classify", **png_post("image-star.png"))
    # A deadline too short to meet: 504s (or refusals), whichever the server's timing gives.
    for _ in range(3):
        httpx.post(f"{console_server.url}/v1/detect?timeout=0.01", **png_post("scene-1.png"))
    after = wait_shown()
    change = {key: after[model][key] - before[model][key] for key in STATUS_KEYS}
    assert change == {"total": 5, "2xx": 2, "4xx": 3, "5xx": 0, "429": 0, "503": 0, "504": 0}
    assert after[other]["total"] - before[other]["total"] == 3
    assert after[None]["total"] - before[None]["total"] == 8
    four_xx = page.execute_script(
        "return document.querySelector(arguments[0]).className",
        f'#status-table tr[data-model="{model}"] td[data-code="4xx"]',
    )
    assert four_xx == "error-text"  # a count of errors above 0 stands out
    scheduler = page.execute_script("return {...document.getElementById('status-scheduler').dataset}")
    listed = httpx.get(f"{console_server.url}/v1/models").json()["scheduler"]
    assert int(scheduler["refused"]) == listed["refused_at_door"] and int(scheduler["dropped"]) == listed["dropped"]


def test_the_status_badge_says_when_the_server_stops_and_when_it_is_gone(console_server, page, tmp_path):
    open_console(page, console_server.url, "server")
    badge = "document.getElementById('server-phase').textContent"
    wait_for(page, f"{badge} === 'ready'", "the ready badge")
    # The page's view of /readyz replaced: first a server in its grace period, then none at all.
    page.execute_script(
        "window.realFetch = window.fetch;"
        "window.fetch = (url, options) => String(url).includes('readyz')"
        "  ? Promise.resolve(new Response(JSON.stringify({ready: false, phase: 'stopping'}), {status: 503}))"
        "  : window.realFetch(url, options);"
    )
    wait_for(page, f"{badge} === 'stopping'", "the stopping badge")
    page.execute_script(
        "window.fetch = (url, options) => String(url).includes('readyz')"
        "  ? Promise.reject(new TypeError('Failed to fetch')) : window.realFetch(url, options);"
    )
    wait_for(page, f"{badge} === 'stopped'", "the stopped badge")
    page.execute_script("window.fetch = window.realFetch;")


def test_the_servers_errors_are_shown_as_they_come(console_server, page, tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    refused = httpx.post(
        f"{console_server.url}/v1/classify", content=b"not an image", headers={"content-type": "text/plain"}
    )
    assert refused.status_code == 415
    choose_task(page, "try", "classify")
    use_input(page, "try", "image-circle.png", upload=False)
    page.find_element("css selector", "#try-input input[type=file]").send_keys(str(text_file))
    wait_for(page, "document.querySelector('#try-input .input-status').dataset.input === 'notes.txt'", "the upload")
    assert run_and_wait(page, "try-run", "try-result") == "error"
    shown = page.execute_script(
        "const e = document.querySelector('#try-result .error');"
        "return [e.dataset.status, e.querySelector('.error-message').textContent]"
    )
    assert shown == ["415", refused.json()["error"]]

    limit = httpx.post(f"{console_server.url}/v1/generate", json={"label": "star", "n": 17})
    assert limit.status_code == 413
    choose_task(page, "try", "generate")
    wait_for(page, "document.querySelector('#try-options [name=label] option[value=star]')", "the class list")
    set_field(page, "try-options", "n", 17)
    assert run_and_wait(page, "try-run", "try-result") == "error"
    shown = page.execute_script(
        "const e = document.querySelector('#try-result .error');"
        "return [e.dataset.status, e.querySelector('.error-message').textContent]"
    )
    assert shown == ["413", limit.json()["error"]]
    errors = console_errors(page)
    assert errors and all(RESOURCE_ERROR in entry["message"] for entry in errors), errors


def test_the_api_key_lives_in_session_storage_and_is_sent(tmp_path):
    key = "console-test-key"
    with BundledServer(api_key=key, models=["eamlp-ea-tiny"]) as server:
        driver = new_driver()
        try:
            open_console(driver, server.url)
            use_input(driver, "try", "image-circle.png", upload=False)
            assert run_and_wait(driver, "try-run", "try-result") == "error"
            status = driver.execute_script("return document.querySelector('#try-result .error').dataset.status")
            assert status == "401"
            driver.find_element("id", "api-key").send_keys(key)
            driver.find_element("css selector", "#key-form button[type=submit]").click()
            wait_for(driver, f"document.getElementById('api-key').value === '{key}'", "the reload with the key")
            wait_for(driver, "document.body.dataset.ready === 'true'", "the console to start again")
            use_input(driver, "try", "image-circle.png", upload=False)
            assert run_and_wait(driver, "try-run", "try-result") == "done"
            stored = driver.execute_script(
                "return [sessionStorage.getItem('easerve.apiKey'), localStorage.length, document.cookie]"
            )
            assert stored == [key, 0, ""]
            errors = console_errors(driver)
            assert all(RESOURCE_ERROR in entry["message"] and "401" in entry["message"] for entry in errors), errors
            check_screenshot(driver, tmp_path / "api-key.png")
        finally:
            driver.quit()


def _load(server, seconds: float) -> None:
    """A bounded loop of requests to the loopback server (two clients, `seconds` long)."""
    import threading

    requests = [
        ("/v1/classify?attention=ea", png_post("image-star.png")),
        ("/v1/classify?attention=sa", png_post("image-star.png")),
        ("/v1/segment?attention=ea", png_post("scene-0.png")),
        ("/v1/segment?attention=sa", png_post("scene-0.png")),
        ("/v1/detect", png_post("scene-1.png")),
    ]

    def client(offset: int) -> None:
        end = time.monotonic() + seconds
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(10_000):
                if time.monotonic() > end:
                    return
                path, body = requests[(i + offset) % len(requests)]
                http.post(path, **body)

    threads = [threading.Thread(target=client, args=(offset,)) for offset in (0, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _save_small(driver, path: Path, height: int | None = None) -> None:
    """A screenshot for the README: the viewport (`height` tall), in at most 256 colours."""
    from PIL import Image

    if height:
        driver.set_window_size(WINDOW[0], height)
    png = driver.get_screenshot_as_png()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    driver.set_window_size(*WINDOW)


@pytest.mark.skipif(not os.environ.get(SCREENSHOTS_ENV), reason=f"set {SCREENSHOTS_ENV}=<folder> to write them")
def test_readme_screenshots(console_server, browser):
    """Not a check: writes the README's pictures of the console (docs/images/console-*.png)."""
    out = Path(os.environ[SCREENSHOTS_ENV])
    out.mkdir(parents=True, exist_ok=True)
    open_console(browser, console_server.url)
    choose_task(browser, "try", "segment")
    use_input(browser, "try", "scene-1.png", upload=False)
    run_and_wait(browser, "try-run", "try-result")
    _save_small(browser, out / "console-segment.png", 960)

    choose_task(browser, "try", "pointcloud-segment")
    use_input(browser, "try", "cloud-cone.npy", upload=False)
    run_and_wait(browser, "try-run", "try-result")
    _save_small(browser, out / "console-pointcloud.png", 760)

    open_console(browser, console_server.url, "compare")
    choose_task(browser, "compare", "segment")
    use_input(browser, "compare", "scene-0.png", upload=False)
    browser.find_element("id", "compare-run").click()
    wait_for(browser, "document.getElementById('compare-sa').dataset.state === 'done'", "the compare")
    browser.find_element("id", "sweep-all").click()
    wait_for(browser, "document.querySelectorAll('#sweep-table tr[data-size]').length === 6", "the sweep", 180)
    browser.execute_script("document.getElementById('compare-ea').closest('.columns').scrollIntoView()")
    _save_small(browser, out / "console-compare.png", 1400)

    open_console(browser, console_server.url, "server")
    _load(console_server, 30)
    time.sleep(2)
    _save_small(browser, out / "console-server.png", 900)
