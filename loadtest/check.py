"""`python -m easerve.loadtest.check --host URL`: one real request per task endpoint and attention kind,
and its answer checked against the sample's known truth.

    python -m easerve.loadtest.check --host http://127.0.0.1:8000 [--attention ea sa] [--tasks ...]

The requests are the load test's own (`loadtest.endpoints`), built from the first sample of each
kind: the circle image, the first scene, the sphere cloud. Exit 0 when every answer is right,
1 otherwise. docker/smoke.sh runs it inside the load-test image; it needs no torch.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import httpx

from easerve.artifacts.tasks import Answer, RequestKind
from easerve.loadtest.endpoints import ATTENTION_KINDS, ENDPOINTS, model_selector, prepared_requests
from easerve.loadtest.judges import Judge, classification, detection, generation, instances, pointclouds, segmentation
from easerve.loadtest.samples import SampleSet, load_samples

REQUEST_TIMEOUT_S = 120.0

# The judge of an answer, by the kind of request and answer (`artifacts.tasks`); each kind's
# judge lives in its own module of `loadtest.judges`.
CHECKS: dict[tuple[RequestKind, Answer], Judge] = {
    ("image", "labels"): classification.check_classify,
    ("image", "boxes"): detection.check_detect,
    ("image", "instance-masks"): instances.check_instances,
    ("image", "pixel-labels"): segmentation.check_segment,
    ("class", "image"): generation.check_generate,
    ("pointcloud", "labels"): pointclouds.check_pointcloud_classify,
    ("pointcloud", "point-labels"): pointclouds.check_pointcloud_segment,
}


@dataclass(frozen=True)
class Verdict:
    task: str
    attention: str
    model: str
    passed: bool
    detail: str


def answer_check(task: str) -> Judge:
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
