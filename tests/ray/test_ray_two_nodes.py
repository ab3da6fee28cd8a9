"""Two Ray nodes on one machine (Ray's own `cluster_utils.Cluster`, as Ray's tests do): the
ingress on the head node, the model's replica placed on the second node by a custom resource
(`--model-config NAME:resources={...}`), and requests answered through it."""

from __future__ import annotations

import json

import httpx
import pytest
from ray_helpers import (
    BUNDLED_WEIGHTS,
    SAMPLES,
    SMALL,
    described_replicas,
    free_port,
    run_app,
    two_node_cluster,
)

pytest.importorskip("ray.serve", reason="needs Ray Serve: pip install 'easerve[ray]'")

import ray  # noqa: E402
from ray import serve  # noqa: E402

from easerve.service.ray_serve.config import APP_NAME  # noqa: E402
from easerve.service.ray_serve.deployments import NODE_HEADER, REPLICA_HEADER  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

MODEL = "eamlp-ea-tiny"
SECOND_NODE = "easerve_test_second_node"  # a custom resource only the second node has


@pytest.fixture(scope="module")
def two_nodes():
    with two_node_cluster({SECOND_NODE: 1}) as nodes:
        yield nodes


def test_a_model_replica_on_the_second_node_serves_requests(two_nodes):
    cluster, second = two_nodes
    head_id, second_id = cluster.head_node.node_id, second.node_id
    assert head_id != second_id and len(ray.nodes()) == 2
    args = {
        "weights_dirs": [str(BUNDLED_WEIGHTS)],
        "models": [MODEL],
        "model_overrides": [f"{MODEL}:resources={json.dumps({SECOND_NODE: 1})}", f"{MODEL}:num_cpus=0.5"],
        "ingress_num_cpus": 0.5,
        **SMALL,
    }
    # One HTTP proxy (on the head node): both nodes share this machine's loopback address.
    url = run_app(args, free_port(), proxy_location="HeadOnly")
    (info,) = described_replicas(MODEL, 1)
    assert info["node"] == second_id
    png = (SAMPLES / "image-circle.png").read_bytes()
    for _ in range(5):
        answer = httpx.post(f"{url}/v1/classify?model={MODEL}", content=png, headers={"content-type": "image/png"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["top_k"][0]["label"] == "circle"
        assert answer.headers[NODE_HEADER] == second_id
        assert answer.headers[REPLICA_HEADER] == info["replica"]
    assert serve.status().applications[APP_NAME].status == "RUNNING"
