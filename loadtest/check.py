"""`python -m easerve.loadtest.check --host URL`: one real request per task endpoint and attention kind,
and its answer checked against the sample's known truth.

    python -m easerve.loadtest.check --host http://127.0.0.1:8000 [--attention ea sa] [--tasks ...]

The requests are the load test's own (`loadtest.endpoints`), built from the first sample of each
kind: the circle image, the first scene, the sphere cloud. Exit 0 when every answer is right,
1 otherwise. docker/smoke.sh runs it inside the load-test image; it needs no torch.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from easerve.artifacts.tasks import Answer, RequestKind
from easerve.loadtest.endpoints import ATTENTION_KINDS, ENDPOINTS, model_selector, prepared_requests
from easerve.loadtest.samples import SampleSet, SceneSample, load_samples

MIN_BOX_IOU = 0.5
MIN_MASK_IOU = 0.5
MIN_BOX_RECALL = 0.5  # of the scene's shapes, found with the right class at MIN_BOX_IOU
MIN_PIXEL_ACCURACY = 0.8
MIN_PART_ACCURACY = 0.7
REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Verdict:
    task: str
    attention: str
    model: str
    passed: bool
    detail: str


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    return float(inter / union) if union > 0 else 0.0


def _decode_png(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


def check_classify(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    expected = samples.images[0].label
    top = answer["results"][0]["top_k"][0]["label"]
    return top == expected, f"top-1 {top!r}, expected {expected!r}"


def _shapes_found(scene: SceneSample, found: list[dict], also: Callable[[int, int], bool]) -> int:
    """The scene's shapes with an answer of the right class whose box has IoU >= MIN_BOX_IOU with
    the shape's and for which `also(shape index, answer index)` holds."""
    return sum(
        any(
            answer["label"] == label
            and _iou(box, np.asarray(answer["box"], np.float32)) >= MIN_BOX_IOU
            and also(shape, index)
            for index, answer in enumerate(found)
        )
        for shape, (box, label) in enumerate(zip(scene.boxes, scene.labels))
    )


def check_detect(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    scene = samples.scenes[0]
    matched = _shapes_found(scene, answer["results"][0]["detections"], lambda shape, index: True)
    recall = matched / len(scene.labels)
    return recall >= MIN_BOX_RECALL, f"{matched}/{len(scene.labels)} shapes found (IoU >= {MIN_BOX_IOU})"


def check_segment(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    truth = samples.scenes[0].mask
    mask = _decode_png(answer["results"][0]["mask_png"])
    if mask.shape != truth.shape:
        return False, f"mask shape {mask.shape}, expected {truth.shape}"
    accuracy = float((mask == truth).mean())
    return accuracy >= MIN_PIXEL_ACCURACY, f"pixel accuracy {accuracy:.3f}"


def check_instances(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    """Recall of the scene's shapes as `check_detect` counts it, each instance's mask also with
    IoU >= MIN_MASK_IOU against the shape's visible pixels."""
    scene = samples.scenes[0]
    found = answer["results"][0]["instances"]
    sizes = {tuple(instance["mask"]["size"]) for instance in found}
    if sizes - {scene.instances.shape}:
        return False, f"mask sizes {sorted(sizes)}, expected {scene.instances.shape}"
    masks = [coco_mask.decode(instance["mask"]) > 0 for instance in found]

    def mask_matches(shape: int, index: int) -> bool:
        truth = scene.instances == shape + 1
        return (masks[index] & truth).sum() >= MIN_MASK_IOU * (masks[index] | truth).sum()

    matched = _shapes_found(scene, found, mask_matches)
    recall = matched / len(scene.labels)
    detail = f"{matched}/{len(scene.labels)} shapes found (box IoU >= {MIN_BOX_IOU}, mask IoU >= {MIN_MASK_IOU})"
    return recall >= MIN_BOX_RECALL, detail


def check_generate(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    images = [_decode_png(encoded) for encoded in answer["images"]]
    shapes = {image.shape for image in images}
    passed = len(images) == 1 and all(len(shape) == 3 and shape[2] == 3 for shape in shapes)
    return passed, f"{len(images)} image(s) of shape {sorted(shapes)}"


def check_pointcloud_classify(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    expected = samples.clouds[0].label
    top = answer["top_k"][0]["label"]
    return top == expected, f"top-1 {top!r}, expected {expected!r}"


def check_pointcloud_segment(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    truth = samples.clouds[0].parts
    parts = answer["parts"]
    if len(parts) != len(truth):
        return False, f"{len(parts)} part labels for {len(truth)} points"
    accuracy = sum(p == t for p, t in zip(parts, truth)) / len(truth)
    return accuracy >= MIN_PART_ACCURACY, f"part accuracy {accuracy:.3f}"


# The judge of an answer, by the kind of request and answer (`artifacts.tasks`).
CHECKS: dict[tuple[RequestKind, Answer], Callable[[dict, SampleSet], tuple[bool, str]]] = {
    ("image", "labels"): check_classify,
    ("image", "boxes"): check_detect,
    ("image", "instance-masks"): check_instances,
    ("image", "pixel-labels"): check_segment,
    ("class", "image"): check_generate,
    ("pointcloud", "labels"): check_pointcloud_classify,
    ("pointcloud", "point-labels"): check_pointcloud_segment,
}


def answer_check(task: str) -> Callable[[dict, SampleSet], tuple[bool, str]]:
    """The judge of the answers of the endpoint `task`."""
    spec = ENDPOINTS[task]
    return CHECKS[spec.request, spec.answer]


def check_endpoint(client: httpx.Client, task: str, attention: str, samples: SampleSet) -> Verdict:
    """Send the first sample's request for `task` to the `attention` model; judge the answer."""
    check = answer_check(task)
    request = prepared_requests(task, samples, model_selector(attention))[0]
    response = client.post(request.url, content=request.body, headers={"Content-Type": request.content_type})
    if response.status_code != 200:
        return Verdict(task, attention, "?", False, f"HTTP {response.status_code}: {response.text[:300]}")
    answer = response.json()
    try:
        passed, detail = check(answer, samples)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        passed, detail = False, f"unexpected answer ({error!r}): {response.text[:300]}"
    return Verdict(task, attention, answer.get("model", "?"), passed, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="base URL of the service")
    parser.add_argument("--attention", nargs="+", choices=ATTENTION_KINDS, default=list(ATTENTION_KINDS))
    parser.add_argument("--tasks", nargs="+", choices=list(ENDPOINTS), default=list(ENDPOINTS))
    args = parser.parse_args(argv)

    samples = load_samples()
    verdicts = []
    with httpx.Client(base_url=args.host.rstrip("/"), timeout=REQUEST_TIMEOUT_S) as client:
        for task in args.tasks:
            for attention in args.attention:
                verdict = check_endpoint(client, task, attention, samples)
                verdicts.append(verdict)
                status = "ok  " if verdict.passed else "FAIL"
                print(f"{status} {task:<20} {attention} {verdict.model:<22} {verdict.detail}", flush=True)
    right = sum(verdict.passed for verdict in verdicts)
    print(f"{right} of {len(verdicts)} answers right")
    return 0 if right == len(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
