"""Locust users for easerve: one user class per task endpoint, each tagged with its task.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000                    # web UI, all users
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 32 -t 60s \\
        --attention sa --image-size 512 SegmentUser                                   # one endpoint

Every user sends back to back (a closed loop: users = concurrency), cycling through the real
samples of loadtest/samples from a random start. Options (or LOCUST_* environment variables):
--attention ea|sa picks the models by attention kind, --model one model by name, --image-size
stretches every image to that square size before it is sent.
No torch: this runs in the slim load-test image.
"""

from __future__ import annotations

import random
import types
from functools import cache

import gevent
from locust import FastHttpUser, constant, events, tag, task

from easerve.artifacts.tasks import TaskSpec
from easerve.loadtest.endpoints import (
    ATTENTION_KINDS,
    ENDPOINTS,
    PreparedRequest,
    model_selector,
    prepared_requests,
    user_class,
)
from easerve.loadtest.samples import load_samples

# Far above any latency worth measuring: the service's own deadlines (504) decide, not the client.
CLIENT_TIMEOUT_S = 600.0


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    parser.add_argument(
        "--attention",
        choices=ATTENTION_KINDS,
        default="ea",
        env_var="LOCUST_ATTENTION",
        help="attention kind of the models asked for (default ea)",
    )
    parser.add_argument(
        "--model",
        default="",
        env_var="LOCUST_MODEL",
        help="ask for this model by name instead (one endpoint's users only)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=0,
        env_var="LOCUST_IMAGE_SIZE",
        help="stretch images to this square size (default: the samples' own size)",
    )


@events.init.add_listener
def refresh_event_loop_clock(**_kwargs) -> None:
    # gevent's loop caches its clock, and nothing has run the loop since the imports began:
    # without this, --run-time's timer starts seconds in the past and a short run ends at once.
    gevent.get_hub().loop.update_now()


@cache
def _requests(task_name: str, attention: str, model: str, image_size: int) -> tuple[PreparedRequest, ...]:
    selector = model_selector(attention, model or None)
    return tuple(prepared_requests(task_name, load_samples(), selector, image_size or None))


class EndpointUser(FastHttpUser):
    """Sends the prepared requests of `task_name` back to back."""

    abstract = True
    task_name: str
    wait_time = constant(0)
    network_timeout = CLIENT_TIMEOUT_S
    connection_timeout = CLIENT_TIMEOUT_S

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.prepared = _requests(self.task_name, options.attention, options.model, options.image_size)
        self.next_index = random.randrange(len(self.prepared))

    def send(self) -> None:
        request = self.prepared[self.next_index % len(self.prepared)]
        self.next_index += 1
        with self.client.post(
            request.url,
            data=request.body,
            headers={"Content-Type": request.content_type},
            name=request.path,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")


def endpoint_user(spec: TaskSpec) -> type[EndpointUser]:
    """The user class of a task's endpoint, named `user_class(spec)`, its one task tagged with the
    endpoint's name."""

    @tag(spec.endpoint)
    @task
    def send_one(user: EndpointUser) -> None:
        user.send()

    namespace = {"task_name": spec.endpoint, "send_one": send_one, "__module__": __name__}
    return types.new_class(user_class(spec), (EndpointUser,), exec_body=lambda body: body.update(namespace))


# Locust finds its user classes among the locustfile's globals, by the names given on its command line.
globals().update({user_class(spec): endpoint_user(spec) for spec in ENDPOINTS.values()})
