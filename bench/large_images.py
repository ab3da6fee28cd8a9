"""`easerve bench large-images`: one large photo at a time through the image routes that draw
(`/v1/segment` and `/v1/segment/instances`), with and without an overlay, its width and format.

A bundled scene stretched to --size (default 3000x2000) and sent as a JPEG (and as a PNG), one
request at a time to a fresh `easerve serve` on loopback: the time from sending to the whole
answer, per case, best and median of --repeats. Writes OUT/bench_large_images.md and .json.

Only the standard library is imported at module level (see easerve/cli.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from easerve.bench.arguments import add_weights_dirs, ea_model_of_each_task, serve_command

# The cases: no overlay, the overlay at the width the console shows, the whole overlay (the
# image's own size up to --max-overlay-pixels), each overlay as PNG and as JPEG.
CASES = (
    "overlay=false",
    "overlay=true&overlay_width=800",
    "overlay=true&overlay_width=800&overlay_format=jpeg",
    "overlay=true",
    "overlay=true&overlay_format=jpeg",
)
REPORT_NAME = "bench_large_images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_dirs(parser)
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="models whose answers draw an overlay (default: the EA model of each task that draws one)",
    )
    parser.add_argument("--size", nargs=2, type=int, default=(3000, 2000), metavar=("W", "H"), help="the photo's size")
    parser.add_argument("--repeats", type=int, default=5, help="requests per case (default: %(default)s)")
    parser.add_argument("--formats", nargs="+", default=["jpeg", "png"], choices=["jpeg", "png"])
    parser.add_argument("--out", type=Path, default=Path("results") / "large-images")


def run(args: argparse.Namespace) -> int:
    import httpx

    from easerve.loadtest.server import free_port, running_server_process

    if args.repeats < 1 or min(args.size) < 1:
        print("error: --repeats and --size must be >= 1")
        return 2
    weights_dirs = args.weights_dirs or [Path("weights")]
    routes = _routes(weights_dirs, args.models)
    models = args.models or list(routes)
    unknown = [model for model in models if model not in routes]
    if unknown or not models:
        found = ", ".join(unknown) or "none found"
        print(f"error: no model in {', '.join(map(str, weights_dirs))} that draws an overlay: {found}")
        return 2
    bodies = {kind: _photo(tuple(args.size), kind) for kind in args.formats}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*serve_command(weights_dirs, tuple(models), []), "--port", str(port)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="easerve-bench-large-") as scratch:
        with (
            running_server_process(command, url, Path(scratch) / "serve.log", 180.0),
            httpx.Client(timeout=120) as http,
        ):
            for model in models:
                for kind, body in bodies.items():
                    for case in CASES:
                        row = _measure(http, f"{url}{routes[model]}?model={model}&{case}", body, kind, args.repeats)
                        if isinstance(row, str):
                            print(f"error: {model} {case}: {row}")
                            return 1
                        rows.append({"model": model, "input": kind, "case": case, **row})
                        print(
                            f"{model:16} {kind:4} {case:50} best {row['best_s']:.3f} s, median {row['median_s']:.3f} s"
                        )
    _write(args.out, args, bodies, rows)
    return 0


def _routes(weights_dirs: list[Path], models: list[str] | None) -> dict[str, str]:
    """The v1 route of each of `models` (default: the first EA model of each task) found in
    `weights_dirs` whose answer draws an overlay."""
    from easerve.artifacts.tasks import TASKS
    from easerve.service.model_files import scan_models

    if models:
        found = scan_models(weights_dirs)
        chosen = [found[name] for name in models if name in found]
    else:
        chosen = ea_model_of_each_task(weights_dirs, [name for name, spec in TASKS.items() if spec.overlay])
    return {files.name: files.manifest.spec.path for files in chosen if files.manifest.spec.overlay}


def _measure(http, target: str, body: bytes, kind: str, repeats: int) -> dict[str, float] | str:
    """Best and median seconds of `repeats` requests (after one warm-up) and the answer's size;
    the error when one is not 200."""
    times, size = [], 0
    for _ in range(repeats + 1):
        sent = time.perf_counter()
        answer = http.post(target, content=body, headers={"content-type": f"image/{kind}"})
        times.append(time.perf_counter() - sent)
        if answer.status_code != 200:
            return f"{answer.status_code} {answer.text[:300]}"
        size = len(answer.content)
    return {"best_s": min(times[1:]), "median_s": statistics.median(times[1:]), "answer_bytes": size}


def _photo(size: tuple[int, int], kind: str) -> bytes:
    """A bundled scene stretched to `size`, encoded as `kind` (JPEG quality 90)."""
    import io

    from PIL import Image

    from easerve.loadtest.samples import load_samples

    scene = Image.open(io.BytesIO(load_samples().scenes[1].png)).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    scene.save(buffer, format=kind.upper(), **({"quality": 90} if kind == "jpeg" else {"compress_level": 6}))
    return buffer.getvalue()


def _write(out: Path, args: argparse.Namespace, bodies: dict[str, bytes], rows: list[dict]) -> None:
    from easerve.artifacts.machine import cpu_model, load_average

    out.mkdir(parents=True, exist_ok=True)
    width, height = args.size
    lines = [
        "# easerve bench large-images",
        "",
        f"{cpu_model()}; load average {load_average()}; one request at a time to `easerve serve` (defaults) on "
        f"loopback, the client on the same machine; a bundled scene stretched to {width}x{height} "
        f"({', '.join(f'{kind} {len(body) / 1e6:.2f} MB' for kind, body in bodies.items())}); best and median "
        f"of {args.repeats} after one warm-up request.",
        "",
        "| model | input | query | best s | median s | answer MB |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['input']} | `{r['case']}` | {r['best_s']:.3f} | {r['median_s']:.3f} | "
        f"{r['answer_bytes'] / 1e6:.2f} |"
        for r in rows
    ]
    (out / f"{REPORT_NAME}.md").write_text("\n".join(lines) + "\n")
    (out / f"{REPORT_NAME}.json").write_text(json.dumps({"size": [width, height], "rows": rows}, indent=2))
    print(f"wrote {out / REPORT_NAME}.md and .json")
