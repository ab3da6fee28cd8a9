"""The web console: a static page at `/ui/` that draws every task's answer, EA beside SA, and the
server's state live (`service/console/`: HTML, CSS and ES modules, no build step, nothing fetched
from elsewhere). It only reads files; everything it shows comes from the public API.

    GET /, /ui               307 to /ui/
    GET /ui/                 the page (Cache-Control: no-cache, ETag)
    GET /ui/assets/{v}/...   its scripts, styles and icon, under a content hash `v` (immutable)
    GET /ui/tasks            the task specs (easerve.artifacts.tasks), to build its task list from
    GET /ui/samples          the bundled sample inputs (JSON list)
    GET /ui/samples/{file}   one of them, by name from a fixed allow-list (no-cache, ETag)

Every route is a GET: with an API key set, the console's files are guarded exactly like the
metadata routes (open, or behind the key with `protect_metadata`), and everything the page does
through the API carries the key the user typed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import get_args

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from easerve.artifacts.tasks import TASKS, SampleSet
from easerve.service.errors import NotFound

router = APIRouter(tags=["console"], include_in_schema=False)

CONSOLE_DIR = Path(__file__).resolve().parents[1] / "console"
# The load test's bundled samples (package data of easerve.loadtest), read as files: the service
# sits below the load test in the import layers (.importlinter), so it never imports it. The two
# folders are siblings in the source tree and in the wheel (easerve/service, easerve/loadtest).
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "loadtest" / "samples"
INDEX_FILE = "index.html"
ASSETS_PLACEHOLDER = "{{assets}}"
SAMPLE_KINDS: tuple[SampleSet, ...] = get_args(SampleSet)

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".npy": "application/octet-stream",
}
NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
# The page runs only its own files; images may be data: or blob: URLs it builds from answers.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class StaticFile:
    content: bytes
    media_type: str
    etag: str


def _static(content: bytes, media_type: str) -> StaticFile:
    return StaticFile(content, media_type, f'"{hashlib.sha256(content).hexdigest()[:32]}"')


@dataclass(frozen=True)
class Console:
    """The page with its assets' URL filled in, and the assets by path under `assets/<version>/`."""

    version: str
    index: StaticFile
    assets: dict[str, StaticFile]


@cache
def load_console(directory: Path = CONSOLE_DIR) -> Console:
    """Every file of the console, read once per process: the version is a hash of all of them, so
    a changed file gets new URLs and no browser keeps an old one."""
    files = {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.suffix in MEDIA_TYPES
    }
    digest = hashlib.sha256()
    for name, content in files.items():
        digest.update(name.encode() + b"\0" + content + b"\0")
    version = digest.hexdigest()[:12]
    index = files.pop(INDEX_FILE).decode().replace(ASSETS_PLACEHOLDER, f"assets/{version}")
    assets = {name: _static(content, MEDIA_TYPES[Path(name).suffix]) for name, content in files.items()}
    return Console(version, _static(index.encode(), MEDIA_TYPES[".html"]), assets)


@dataclass(frozen=True)
class Samples:
    listing: dict[str, list[dict]]
    files: dict[str, Path]


@cache
def load_sample_index(directory: Path = SAMPLES_DIR) -> Samples:
    """The sample inputs named by the samples' index.json: the allow-list of files served."""
    index = json.loads((directory / "index.json").read_text())
    listing: dict[str, list[dict]] = {kind: [] for kind in SAMPLE_KINDS}
    for kind in SAMPLE_KINDS:
        for entry in index.get(kind, []):
            labels = entry.get("labels", [entry["label"]] if "label" in entry else [])
            listing[kind].append({"file": entry["file"], "labels": labels})
    files = {entry["file"]: directory / entry["file"] for kind in SAMPLE_KINDS for entry in listing[kind]}
    return Samples(listing, files)


def _served(request: Request, static: StaticFile, cache_control: str) -> Response:
    headers = {"ETag": static.etag, "Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"}
    if static.media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    if static.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(static.content, media_type=static.media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
@router.api_route("/ui", methods=["GET", "HEAD"])
async def console_redirect() -> RedirectResponse:
    """The root and /ui lead to the console's page (relative: "ui/" from either)."""
    return RedirectResponse("ui/", status_code=307)


@router.api_route("/ui/", methods=["GET", "HEAD"])
async def console_page(request: Request) -> Response:
    return _served(request, load_console().index, NO_CACHE)


@router.api_route("/ui/assets/{version}/{path:path}", methods=["GET", "HEAD"])
async def console_asset(version: str, path: str, request: Request) -> Response:
    console = load_console()
    asset = console.assets.get(path)
    if version != console.version or asset is None:
        raise NotFound(f"no console asset {version}/{path}")
    return _served(request, asset, IMMUTABLE)


@cache
def task_table() -> list[dict]:
    """Every task's spec as the page reads it: it chooses its plug-ins (input, options, renderer) by
    the request and answer kinds, and names a task only by what the server sends here."""
    return [{**dataclasses.asdict(spec), "endpoint": spec.endpoint} for spec in TASKS.values()]


@router.api_route("/ui/tasks", methods=["GET", "HEAD"])
async def task_list() -> JSONResponse:
    return JSONResponse(task_table(), headers={"Cache-Control": NO_CACHE})


@router.api_route("/ui/samples", methods=["GET", "HEAD"])
async def sample_list() -> JSONResponse:
    return JSONResponse(load_sample_index().listing, headers={"Cache-Control": NO_CACHE})


@router.api_route("/ui/samples/{name}", methods=["GET", "HEAD"])
async def sample_file(name: str, request: Request) -> Response:
    path = load_sample_index().files.get(name)
    if path is None:
        raise NotFound(f"no bundled sample {name!r}")
    return _served(request, _sample(path), NO_CACHE)


@cache
def _sample(path: Path) -> StaticFile:
    return _static(path.read_bytes(), MEDIA_TYPES.get(path.suffix, "application/octet-stream"))
