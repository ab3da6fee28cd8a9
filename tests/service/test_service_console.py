"""The web console's files (`service/routers/console.py`, `service/console/`): served with the right
content types and caching headers, nothing outside its allow-lists, nothing fetched from elsewhere,
and no route that gets around the API key. (The page itself runs in tests/browser.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from onnx_fixtures import model_name
from service_helpers import TestClient, make_settings

from easerve.artifacts.tasks import TASKS
from easerve.loadtest.samples import SAMPLES_DIR, load_samples
from easerve.service import app as service_app
from easerve.service.app import create_app
from easerve.service.routers import console

CLASSIFIER = model_name("fixcls")
CONSOLE = Path(console.__file__).resolve().parents[1] / "console"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
IMMUTABLE = "public, max-age=31536000, immutable"
KEY = "console-k"


def console_app(weights_dir, **overrides):
    return create_app(make_settings(weights_dir, models=[CLASSIFIER], **overrides))


@pytest.fixture(scope="module")
def web(weights_dir):
    with TestClient(console_app(weights_dir)) as client:
        yield client


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(assets/[0-9a-f]{12}/[^"]+)"', page)


def console_files() -> list[Path]:
    return sorted(path for path in CONSOLE.rglob("*") if path.is_file() and path.name != "index.html")


def test_root_and_ui_redirect_to_the_page(web):
    for path in ("/", "/ui"):
        response = web.get(path, follow_redirects=False)
        assert response.status_code == 307, path
        assert response.headers["location"] == "ui/"
    page = web.get("/")
    assert page.status_code == 200 and str(page.url).endswith("/ui/")
    assert "<title>easerve console</title>" in page.text


def test_the_page_is_html_revalidated_on_every_load(web):
    page = web.get("/ui/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    etag = page.headers["etag"]
    again = web.get("/ui/", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert web.head("/ui/").status_code == 200


def test_every_asset_is_served_under_its_version_with_its_type_and_cached_for_good(web):
    page = web.get("/ui/").text
    version = console.load_console().version
    referenced = asset_urls(page)
    assert {url.split("/", 2)[2] for url in referenced} == {"favicon.svg", "css/console.css", "js/main.js"}
    assert all(url.startswith(f"assets/{version}/") for url in referenced)
    for path in console_files():
        name = path.relative_to(CONSOLE).as_posix()
        response = web.get(f"/ui/assets/{version}/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == CONTENT_TYPES[path.suffix], name
        assert response.headers["cache-control"] == IMMUTABLE
        assert response.headers["etag"] and response.content == path.read_bytes()
        assert (
            web.get(f"/ui/assets/{version}/{name}", headers={"if-none-match": response.headers["etag"]}).status_code
            == 304
        )


def test_the_version_is_a_hash_of_the_files(tmp_path):
    (tmp_path / "index.html").write_text('<script src="{{assets}}/a.js"></script>')
    (tmp_path / "a.js").write_text("1")
    first = console.load_console(tmp_path)
    (tmp_path / "a.js").write_text("2")
    console.load_console.cache_clear()
    try:
        second = console.load_console(tmp_path)
    finally:
        console.load_console.cache_clear()
    assert first.version != second.version
    assert second.index.content.decode() == f'<script src="assets/{second.version}/a.js"></script>'


def test_every_module_import_resolves_to_a_served_file():
    modules = {path.relative_to(CONSOLE).as_posix() for path in CONSOLE.glob("js/*.js")}
    for path in CONSOLE.glob("js/*.js"):
        for target in re.findall(r'^import .* from "\./([\w-]+\.js)";$', path.read_text(), re.M):
            assert f"js/{target}" in modules, f"{path.name} imports {target}"


def test_nothing_is_fetched_from_elsewhere():
    """Offline: no CDN, no absolute URL, no inline script (the page's policy allows only its own files)."""
    for path in [CONSOLE / "index.html", *console_files()]:
        text = path.read_text()
        for url in re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text):
            assert url == "http://www.w3.org/2000/svg", f"{path.name}: {url}"
    page = (CONSOLE / "index.html").read_text()
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page))


@pytest.mark.parametrize(
    "path",
    [
        "/ui/assets/000000000000/js/main.js",
        "/ui/assets/{version}/js/missing.js",
        "/ui/assets/{version}/index.html",
        "/ui/assets/{version}/..%2F..%2Frouters%2Fconsole.py",
        "/ui/assets/{version}/%2e%2e/%2e%2e/app.py",
        "/ui/samples/index.json",
        "/ui/samples/scene-0-mask.png",
        "/ui/samples/..%2Fsamples.py",
        "/ui/samples/%2e%2e%2F%2e%2e%2Fservice%2Fapp.py",
    ],
)
def test_only_the_allow_listed_files_are_served(web, path):
    response = web.get(path.format(version=console.load_console().version))
    assert response.status_code == 404, response.text
    assert "error" in response.json()


def test_the_bundled_samples_are_listed_and_served_as_they_are(web):
    assert console.SAMPLES_DIR.resolve() == SAMPLES_DIR.resolve()
    listing = web.get("/ui/samples").json()
    samples = load_samples()
    assert [entry["file"] for entry in listing["images"]] == [sample.name for sample in samples.images]
    assert [entry["labels"] for entry in listing["images"]] == [[sample.label] for sample in samples.images]
    assert [entry["labels"] for entry in listing["scenes"]] == [list(sample.labels) for sample in samples.scenes]
    assert [entry["file"] for entry in listing["clouds"]] == [sample.name for sample in samples.clouds]
    for entry in listing["images"] + listing["scenes"] + listing["clouds"]:
        response = web.get(f"/ui/samples/{entry['file']}")
        assert response.status_code == 200
        expected = "image/png" if entry["file"].endswith(".png") else "application/octet-stream"
        assert response.headers["content-type"] == expected
        assert response.headers["cache-control"] == "no-cache" and response.headers["etag"]
        assert response.content == (SAMPLES_DIR / entry["file"]).read_bytes()


def test_the_task_table_is_the_task_specs(web):
    response = web.get("/ui/tasks")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    tasks = response.json()
    assert [task["name"] for task in tasks] == list(TASKS)
    assert tasks[0] == {
        "name": "classification",
        "title": "Image classification",
        "data": "image",
        "request": "image",
        "target": "label",
        "answer": "labels",
        "path": "/v1/classify",
        "samples": "images",
        "overlay": False,
        "endpoint": "classify",
    }
    assert {task["name"] for task in tasks if task["overlay"]} == {name for name, spec in TASKS.items() if spec.overlay}
    # Every sample set a task names is one the console lists.
    listing = web.get("/ui/samples").json()
    assert {spec.samples for spec in TASKS.values()} - {None} <= set(listing)


def test_the_console_names_no_task():
    """The page builds its task list from /ui/tasks and picks its plug-ins by request and answer
    kind: no script spells a task's name or its endpoint key."""
    words = {spec.name for spec in TASKS.values()} | {spec.endpoint for spec in TASKS.values()}
    for path in CONSOLE.glob("js/*.js"):
        text = path.read_text()
        # As a string, or as an object's key.
        named = set(re.findall(r"[\"'`]([\w-]+)[\"'`]", text)) | set(re.findall(r"\b(\w+)\s*:", text))
        assert not named & words, f"{path.name} names {sorted(named & words)}"


def test_the_console_is_in_the_app_and_only_reads():
    assert console.router in service_app.ROUTERS
    for route in console.router.routes:
        assert route.methods <= {"GET", "HEAD"}, route.path
        assert not route.include_in_schema, route.path


def test_the_console_stays_out_of_the_openapi_document(web):
    paths = web.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]


def console_paths() -> list[str]:
    version = console.load_console().version
    return [
        "/",
        "/ui",
        "/ui/",
        f"/ui/assets/{version}/js/main.js",
        "/ui/tasks",
        "/ui/samples",
        "/ui/samples/scene-0.png",
    ]


def test_with_a_key_the_console_is_open_as_metadata_is_and_posts_still_need_the_key(weights_dir):
    with TestClient(console_app(weights_dir, api_key=KEY)) as client:
        for path in console_paths():
            assert client.get(path, follow_redirects=False).status_code in (200, 307), path
            # No write route: a POST is refused for the key before anything else looks at it.
            assert client.post(path, content=b"x").status_code == 401, path
            assert client.post(path, content=b"x", headers={"X-API-Key": KEY}).status_code == 405, path
        assert client.post("/v1/classify", content=b"x", headers={"content-type": "image/png"}).status_code == 401


def test_with_protected_metadata_the_page_opens_and_its_data_needs_the_key(weights_dir):
    with TestClient(console_app(weights_dir, api_key=KEY, protect_metadata=True)) as client:
        for path in console_paths():
            answer = client.get(path, follow_redirects=False)
            if path.startswith(("/ui/samples", "/ui/tasks")):
                assert answer.status_code == 401, path
                assert answer.json() == {
                    "error": "missing or wrong API key (send Authorization: Bearer <key> or X-API-Key)"
                }
            else:  # the page and its static files hold no data, and a browser navigates without a key
                assert answer.status_code in (200, 307), path
            allowed = client.get(path, follow_redirects=False, headers={"Authorization": f"Bearer {KEY}"})
            assert allowed.status_code in (200, 307), path
        for metadata in ("/v1/models", "/metrics"):
            assert client.get(metadata).status_code == 401
