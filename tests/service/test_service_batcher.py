"""DynamicBatcher on its own: how batches form, deadlines, back-pressure, drain, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import numpy as np
import pytest

from easerve.service.batcher import BatchingConfig, BatchMemory, Deferred, DynamicBatcher, Finish
from easerve.service.errors import DeadlineExceeded, InferenceFailed, InvalidInput, QueueFull, Unavailable
from easerve.service.runners.base import InputRejected
from easerve.service.scheduler.device import DeviceScheduler


class RecordingModel:
    """Doubles its input; optionally slow or failing; records each batch it ran."""

    def __init__(self, delay_s: float = 0.0, fail_first: bool = False) -> None:
        self.delay_s = delay_s
        self.fail_next = fail_first
        self.batches: list[np.ndarray] = []
        self.started = threading.Event()
        self.threads: set[str] = set()
        self._running = 0
        self.most_at_once = 0

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._running += 1
        self.most_at_once = max(self.most_at_once, self._running)
        self.threads.add(threading.current_thread().name)
        self.started.set()
        time.sleep(self.delay_s)
        self._running -= 1
        self.batches.append(inputs["x"].copy())
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        return {"y": inputs["x"] * 2}


def rows(*values: float, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] * width for v in values], np.float32)}


def run(coroutine):
    return asyncio.run(coroutine)


async def started_batcher(model: RecordingModel, *more_instances: RecordingModel, **config) -> DynamicBatcher:
    batcher = DynamicBatcher("m", [model, *more_instances], BatchingConfig(**{"max_batch_size": 8, **config}))
    batcher.start()
    return batcher


def far_deadline() -> float:
    return time.perf_counter() + 30


async def occupy(batcher: DynamicBatcher, model: RecordingModel) -> asyncio.Task:
    """Submit one request and return once the model is computing it."""
    task = asyncio.create_task(batcher.submit(rows(-1), far_deadline()))
    await asyncio.to_thread(model.started.wait, 5)
    return task


def test_a_lone_request_runs_at_once_and_gets_its_own_rows():
    async def scenario():
        model = RecordingModel()
        batcher = await started_batcher(model, max_queue_delay_s=0.0)
        outcome = await batcher.submit(rows(3), far_deadline())
        await batcher.drain(5)
        return outcome

    outcome = run(scenario())
    assert outcome.batch_size == 1
    assert outcome.queue_s < 0.05
    np.testing.assert_array_equal(outcome.outputs["y"], [[6, 6]])


def test_requests_waiting_while_the_runner_is_busy_form_one_batch_in_arrival_order():
    async def scenario():
        model = RecordingModel(delay_s=0.2)
        batcher = await started_batcher(model)
        first = await occupy(batcher, model)
        waiting = [asyncio.create_task(batcher.submit(rows(i), far_deadline())) for i in range(5)]
        outcomes = await asyncio.gather(first, *waiting)
        await batcher.drain(5)
        return model, outcomes

    model, outcomes = run(scenario())
    assert [len(batch) for batch in model.batches] == [1, 5]
    np.testing.assert_array_equal(model.batches[1][:, 0], [0, 1, 2, 3, 4])
    for i, outcome in enumerate(outcomes[1:]):
        assert outcome.batch_size == 5
        np.testing.assert_array_equal(outcome.outputs["y"], [[2 * i, 2 * i]])


def test_a_batch_never_exceeds_max_batch_size_and_multi_item_requests_count_their_items():
    async def scenario():
        model = RecordingModel(delay_s=0.2)
        batcher = await started_batcher(model, max_batch_size=8)
        first = await occupy(batcher, model)
        waiting = [asyncio.create_task(batcher.submit(rows(i, i, i), far_deadline())) for i in range(4)]
        outcomes = await asyncio.gather(first, *waiting)
        await batcher.drain(5)
        return model, outcomes

    model, outcomes = run(scenario())
    # 3 + 3 fit in 8, the third request of 3 would make 9: it waits for the next batch.
    assert [len(batch) for batch in model.batches] == [1, 6, 6]
    assert all(outcome.outputs["y"].shape == (3, 2) for outcome in outcomes[1:])


@pytest.mark.parametrize("policy", ["free", "fifo", "slack"])
def test_a_batch_is_cut_before_its_predicted_working_memory_passes_the_limit(policy):
    """Requests admitted apart (HTTP workers, Ray ingress replicas) meet in one queue: the batch
    still holds no more working memory than the budget. A request over it alone still runs
    (its own admission bounded it)."""

    async def scenario():
        model = RecordingModel(delay_s=0.2)
        memory = BatchMemory(lambda shapes: 40 * shapes["x"][0], limit_bytes=100)
        batcher = DynamicBatcher(
            "m", [model], BatchingConfig(max_batch_size=8), scheduler=DeviceScheduler(policy, 1), memory=memory
        )
        batcher.start()
        first = await occupy(batcher, model)
        waiting = [asyncio.create_task(batcher.submit(rows(i), far_deadline())) for i in range(5)]
        waiting.append(asyncio.create_task(batcher.submit(rows(7, 7, 7), far_deadline())))
        await asyncio.gather(first, *waiting)
        await batcher.drain(5)
        return model

    model = run(scenario())
    # 40 + 40 fit in 100, a third would make 120; the 3-row request (120 alone) runs alone.
    assert [len(batch) for batch in model.batches] == [1, 2, 2, 1, 3]


def test_shape_incompatible_requests_are_not_batched_together():
    async def scenario():
        model = RecordingModel(delay_s=0.2)
        batcher = await started_batcher(model)
        first = await occupy(batcher, model)
        narrow = [asyncio.create_task(batcher.submit(rows(i, width=2), far_deadline())) for i in range(2)]
        wide = [asyncio.create_task(batcher.submit(rows(i, width=5), far_deadline())) for i in range(2)]
        await asyncio.gather(first, *narrow, *wide)
        await batcher.drain(5)
        return model

    model = run(scenario())
    assert [batch.shape for batch in model.batches] == [(1, 2), (2, 2), (2, 5)]


def test_queue_delay_is_counted_from_the_oldest_request_not_the_newest():
    async def scenario():
        model = RecordingModel()
        batcher = await started_batcher(model, max_queue_delay_s=0.3)
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = asyncio.create_task(batcher.submit(rows(1), far_deadline()))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(batcher.submit(rows(2), far_deadline()))
        outcomes = await asyncio.gather(first, second)
        elapsed = loop.time() - start
        await batcher.drain(5)
        return elapsed, outcomes

    elapsed, outcomes = run(scenario())
    assert all(outcome.batch_size == 2 for outcome in outcomes)
    assert 0.28 <= elapsed < 0.45  # 0.3 s from the first arrival, not 0.5 s (0.2 + 0.3)


def test_a_full_batch_is_dispatched_without_waiting_for_the_queue_delay():
    async def scenario():
        model = RecordingModel()
        batcher = await started_batcher(model, max_batch_size=4, max_queue_delay_s=5.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        outcomes = await asyncio.gather(*(batcher.submit(rows(i), far_deadline()) for i in range(4)))
        elapsed = loop.time() - start
        await batcher.drain(5)
        return elapsed, outcomes

    elapsed, outcomes = run(scenario())
    assert elapsed < 1.0
    assert [outcome.batch_size for outcome in outcomes] == [4, 4, 4, 4]


def test_a_deadline_passing_in_the_queue_answers_at_once_and_is_never_computed():
    async def scenario():
        model = RecordingModel(delay_s=1.0)
        batcher = await started_batcher(model)
        first = await occupy(batcher, model)
        submitted = time.perf_counter()
        with pytest.raises(DeadlineExceeded, match="not computed"):
            await batcher.submit(rows(7), submitted + 0.1)
        answered_after = time.perf_counter() - submitted
        await first
        await batcher.drain(5)
        return model, answered_after

    model, answered_after = run(scenario())
    assert answered_after < 0.5  # not after the 1 s batch in flight
    assert [batch[:, 0].tolist() for batch in model.batches] == [[-1.0]]


def test_a_full_queue_refuses_with_a_retry_after_estimate():
    async def scenario():
        model = RecordingModel(delay_s=0.3)
        batcher = await started_batcher(model, max_batch_size=1, max_queue_size=2)
        first = await occupy(batcher, model)
        queued = [asyncio.create_task(batcher.submit(rows(i), far_deadline())) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as refused:
            await batcher.submit(rows(9), far_deadline())
        outcomes = await asyncio.gather(first, *queued)
        await batcher.drain(5)
        return refused.value, outcomes

    refused, outcomes = run(scenario())
    assert refused.status_code == 429
    assert int(refused.headers()["Retry-After"]) >= 1
    assert len(outcomes) == 3


def test_drain_computes_everything_queued_then_refuses_new_requests():
    async def scenario():
        model = RecordingModel(delay_s=0.1)
        batcher = await started_batcher(model, max_batch_size=2)
        first = await occupy(batcher, model)
        queued = [asyncio.create_task(batcher.submit(rows(i), far_deadline())) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.drain(10)
        assert all(task.done() for task in queued)
        with pytest.raises(Unavailable):
            await batcher.submit(rows(1), far_deadline())
        return await asyncio.gather(first, *queued)

    outcomes = run(scenario())
    assert len(outcomes) == 6


def test_a_drain_that_times_out_still_answers_every_queued_request():
    async def scenario():
        model = RecordingModel(delay_s=0.3)
        batcher = await started_batcher(model, max_batch_size=1)
        first = await occupy(batcher, model)
        queued = [asyncio.create_task(batcher.submit(rows(i), far_deadline())) for i in range(3)]
        await asyncio.sleep(0)
        await batcher.drain(0.05)
        return await asyncio.gather(first, *queued, return_exceptions=True)

    results = run(scenario())
    assert not isinstance(results[0], Exception)
    assert all(isinstance(result, Unavailable) for result in results[1:])


def test_a_lone_failing_request_gets_the_error_and_the_next_batch_runs():
    async def scenario():
        model = RecordingModel(fail_first=True)
        batcher = await started_batcher(model)
        failed = await asyncio.gather(batcher.submit(rows(1), far_deadline()), return_exceptions=True)
        recovered = await batcher.submit(rows(5), far_deadline())
        await batcher.drain(5)
        return failed, recovered

    failed, recovered = run(scenario())
    assert isinstance(failed[0], InferenceFailed)
    np.testing.assert_array_equal(recovered.outputs["y"], [[10, 10]])


class PoisonedModel(RecordingModel):
    """Fails any batch holding the value 99 (as a backend fails on one bad row), with `error`."""

    def __init__(self, error: Exception) -> None:
        super().__init__(delay_s=0.05)
        self.error = error

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = super().__call__(inputs)
        if (inputs["x"] == 99).any():
            raise self.error
        return outputs


@pytest.mark.parametrize(
    "error,expected",
    [(RuntimeError("index out of range"), InferenceFailed), (InputRejected("bad label"), InvalidInput)],
    ids=["runner-error", "input-rejected"],
)
def test_a_failing_batch_is_rerun_request_by_request_so_only_the_culprit_fails(error, expected):
    async def scenario():
        model = PoisonedModel(error)
        batcher = await started_batcher(model)
        # The first request runs alone; the rest queue behind it and form one batch.
        submitted = [batcher.submit(rows(value), far_deadline()) for value in (1, 2, 99, 3, 4)]
        results = await asyncio.gather(*submitted, return_exceptions=True)
        await batcher.drain(5)
        return model, results

    model, results = run(scenario())
    assert any(len(batch) > 2 and 99 in batch for batch in model.batches), "the poisoned batch never formed"
    assert isinstance(results[2], expected)
    for value, result in zip((1, 2, 3, 4), results[:2] + results[3:]):
        assert not isinstance(result, Exception), result
        np.testing.assert_array_equal(result.outputs["y"], [[2 * value, 2 * value]])


def test_a_request_larger_than_max_batch_size_runs_in_chunks():
    async def scenario():
        model = RecordingModel()
        batcher = await started_batcher(model, max_batch_size=4)
        outcome = await batcher.submit(rows(*range(10)), far_deadline())
        await batcher.drain(5)
        return model, outcome

    model, outcome = run(scenario())
    assert [len(batch) for batch in model.batches] == [4, 4, 2]
    np.testing.assert_array_equal(outcome.outputs["y"][:, 0], np.arange(10) * 2)


def test_a_cancelled_request_leaves_the_queue_and_is_never_computed():
    async def scenario():
        model = RecordingModel(delay_s=0.2)
        batcher = await started_batcher(model)
        first = await occupy(batcher, model)
        abandoned = asyncio.create_task(batcher.submit(rows(42), far_deadline()))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        await first
        await batcher.drain(5)
        return model, batcher

    model, batcher = run(scenario())
    assert batcher.queue_depth == 0
    assert [batch[:, 0].tolist() for batch in model.batches] == [[-1.0]]


def test_instances_compute_batches_side_by_side_each_on_its_own_thread_one_at_a_time():
    async def scenario():
        instances = [RecordingModel(delay_s=0.2), RecordingModel(delay_s=0.2)]
        batcher = await started_batcher(*instances, max_batch_size=1)
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(batcher.submit(rows(i), far_deadline()) for i in range(6)))
        elapsed = time.perf_counter() - started
        await batcher.drain(5)
        batcher.close()
        return instances, outcomes, elapsed

    instances, outcomes, elapsed = run(scenario())
    for i, outcome in enumerate(outcomes):
        np.testing.assert_array_equal(outcome.outputs["y"], [[2 * i, 2 * i]])
    # Six batches of 0.2 s on two instances: three rounds, not six.
    assert elapsed < 5 * 0.2
    counts = [len(instance.batches) for instance in instances]
    assert sum(counts) == 6 and min(counts) >= 2  # both took their share
    for instance in instances:
        assert instance.most_at_once == 1
        assert len(instance.threads) == 1
    assert instances[0].threads != instances[1].threads


def test_a_second_instance_takes_the_queue_while_the_first_computes():
    async def scenario(count: int):
        instances = [RecordingModel(delay_s=0.4) for _ in range(count)]
        batcher = await started_batcher(*instances)
        first = asyncio.create_task(batcher.submit(rows(1), far_deadline()))
        while not any(instance.started.is_set() for instance in instances):
            await asyncio.sleep(0.005)
        second = await batcher.submit(rows(7), far_deadline())
        await first
        await batcher.drain(5)
        return second

    with_two, with_one = run(scenario(2)), run(scenario(1))
    np.testing.assert_array_equal(with_two.outputs["y"], [[14, 14]])
    assert with_two.queue_s < 0.1
    assert with_one.queue_s > 0.3  # one instance: it waited for the first batch


def test_drain_waits_for_every_instance_in_flight():
    async def scenario():
        instances = [RecordingModel(delay_s=0.3), RecordingModel(delay_s=0.3)]
        batcher = await started_batcher(*instances, max_batch_size=1)
        tasks = [asyncio.create_task(batcher.submit(rows(i), far_deadline())) for i in range(4)]
        await asyncio.sleep(0.05)
        await batcher.drain(10)
        return tasks

    tasks = run(scenario())
    assert all(task.done() and not task.exception() for task in tasks)


def test_a_batch_is_cut_at_the_largest_preferred_size_it_can_reach():
    async def scenario():
        model = RecordingModel(delay_s=0.05)
        batcher = await started_batcher(model, max_batch_size=8, preferred_batch_sizes=(2, 4))
        # Seven queued at once: a batch of 4, then of 2 (not 3), then the last one.
        await asyncio.gather(*(batcher.submit(rows(value), far_deadline()) for value in range(7)))
        await batcher.drain(5)
        return [len(batch) for batch in model.batches]

    assert run(scenario()) == [4, 2, 1]


class CountingPrepare:
    """A batch-wide step that doubles `y` and records every batch it saw (equal instances
    compare equal, as `Finish.prepare` objects of one kind of request must)."""

    calls: list[int] = []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountingPrepare)

    def __hash__(self) -> int:
        return hash(CountingPrepare)

    def __call__(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        CountingPrepare.calls.append(len(outputs["y"]))
        return {"z": outputs["y"] + 1}


def test_answers_are_made_on_the_runner_thread_and_a_shared_prepare_runs_once_per_batch():
    async def scenario():
        model = RecordingModel(delay_s=0.05)
        batcher = await started_batcher(model)
        CountingPrepare.calls = []
        threads: list[str] = []

        def answer(outcome):
            threads.append(threading.current_thread().name)
            return [float(v) for v in outcome.outputs["z"][:, 0]]

        first = await occupy(batcher, model)
        finish = [Finish(answer, CountingPrepare()) for _ in range(3)]
        outcomes = await asyncio.gather(
            *(batcher.submit(rows(value), far_deadline(), finish[i]) for i, value in enumerate((1, 2, 3)))
        )
        await first
        batcher.close()
        return outcomes, threads

    outcomes, threads = run(scenario())
    assert [outcome.answer for outcome in outcomes] == [[3.0], [5.0], [7.0]]  # (x * 2) + 1, own rows
    assert CountingPrepare.calls == [3]  # once, on the whole batch of three
    assert len(threads) == 3 and all(name.startswith("runner-m") for name in threads)


def test_a_request_whose_answer_fails_fails_alone_and_its_batch_mates_are_answered():
    async def scenario():
        model = RecordingModel(delay_s=0.05)
        batcher = await started_batcher(model)

        def answer(outcome):
            if outcome.outputs["y"][0, 0] == 4:
                raise ValueError("cannot answer this one")
            return "ok"

        def refuse(outcome):
            raise InvalidInput("the request's own fault")

        first = await occupy(batcher, model)
        results = await asyncio.gather(
            batcher.submit(rows(1), far_deadline(), Finish(answer)),
            batcher.submit(rows(2), far_deadline(), Finish(answer)),
            batcher.submit(rows(3), far_deadline(), Finish(refuse)),
            batcher.submit(rows(5), far_deadline()),
            return_exceptions=True,
        )
        await first
        batcher.close()
        return results, len(model.batches)

    (good, failed, refused, plain), batches = run(scenario())
    assert good.answer == "ok"
    assert isinstance(failed, InferenceFailed) and "cannot answer this one" in str(failed)
    assert isinstance(refused, InvalidInput)
    assert plain.answer is None and plain.outputs["y"][0, 0] == 10
    assert batches == 2  # the occupying request, then the four in one batch: never rerun


class Parts:
    """`Deferred` inputs of one row each, made where the batch runs: records what was loaded and
    every join (a batch's parts at once); a row of value < 0 fails to load."""

    def __init__(self) -> None:
        self.loaded: list[float] = []
        self.joins: list[list[float]] = []
        self.threads: set[str] = set()

    def deferred(self, value: float, width: int = 2) -> Deferred:
        def load() -> float:
            self.threads.add(threading.current_thread().name)
            self.loaded.append(value)
            if value < 0:
                raise InvalidInput(f"cannot read {value}")
            return value

        return Deferred(1, (("x", (width,), np.dtype(np.float32).str),), load, self.join)

    def join(self, parts: list[object]) -> dict[str, np.ndarray]:
        self.joins.append(list(parts))
        return rows(*parts)  # type: ignore[arg-type]


def run_behind_a_busy_runner(model: RecordingModel, inputs: list) -> list:
    """The outcomes (or errors) of `inputs`, queued while `model` computes one request first (so
    that they form a batch), that first request's outcome first."""

    async def scenario():
        batcher = await started_batcher(model)
        first = await occupy(batcher, model)
        waiting = [asyncio.create_task(batcher.submit(each, far_deadline())) for each in inputs]
        outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)
        await batcher.drain(5)
        return outcomes

    return run(scenario())


def test_deferred_inputs_are_made_on_the_runner_and_joined_once_per_batch_beside_built_tensors():
    model, parts = RecordingModel(delay_s=0.2), Parts()
    inputs = [parts.deferred(1), parts.deferred(2), rows(3), parts.deferred(4), parts.deferred(5)]
    outcomes = run_behind_a_busy_runner(model, inputs)
    assert [len(batch) for batch in model.batches] == [1, 5]
    np.testing.assert_array_equal(model.batches[1][:, 0], [1, 2, 3, 4, 5])  # in arrival order
    assert parts.joins == [[1, 2], [4, 5]]  # each run of parts at once, around the built tensors
    assert parts.threads == model.threads  # loaded on the instance's thread
    for value, outcome in zip([1, 2, 3, 4, 5], outcomes[1:], strict=True):
        assert outcome.batch_size == 5
        np.testing.assert_array_equal(outcome.outputs["y"], [[2 * value, 2 * value]])


def test_a_request_whose_inputs_cannot_be_made_fails_alone_and_its_batch_runs_without_it():
    model, parts = RecordingModel(delay_s=0.2), Parts()
    _, good, bad, other = run_behind_a_busy_runner(model, [parts.deferred(1), parts.deferred(-1), parts.deferred(3)])
    assert isinstance(bad, InvalidInput) and "cannot read -1" in str(bad)
    np.testing.assert_array_equal(model.batches[1][:, 0], [1, 3])
    np.testing.assert_array_equal(good.outputs["y"], [[2, 2]])
    np.testing.assert_array_equal(other.outputs["y"], [[6, 6]])


def test_a_failed_batch_of_deferred_inputs_runs_again_one_by_one_without_making_them_again():
    class FailsOnBatches(RecordingModel):
        def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = super().__call__(inputs)
            if len(inputs["x"]) > 1:
                raise RuntimeError("boom")
            return outputs

    model, parts = FailsOnBatches(delay_s=0.2), Parts()
    _, one, bad, two, three = run_behind_a_busy_runner(model, [parts.deferred(v) for v in (1, -1, 2, 3)])
    assert [len(batch) for batch in model.batches] == [1, 3, 1, 1, 1]
    # made once each, kept for the runs alone: the failed one's error too (not made again from
    # an image its first attempt closed)
    assert sorted(parts.loaded) == [-1, 1, 2, 3]
    assert isinstance(bad, InvalidInput) and "cannot read -1" in str(bad)
    for value, outcome in ((1, one), (2, two), (3, three)):
        np.testing.assert_array_equal(outcome.outputs["y"], [[2 * value, 2 * value]])


def test_a_batch_whose_every_input_failed_teaches_the_latency_model_nothing():
    async def scenario():
        model, parts = RecordingModel(delay_s=0.2), Parts()
        batcher = await started_batcher(model)
        first = await occupy(batcher, model)
        await first
        before = batcher.latency.table([1, 2])
        failing = [asyncio.create_task(batcher.submit(parts.deferred(-v), far_deadline())) for v in (1, 2)]
        outcomes = await asyncio.gather(*failing, return_exceptions=True)
        after = batcher.latency.table([1, 2])
        await batcher.drain(5)
        return model, outcomes, before, after

    model, outcomes, before, after = run(scenario())
    assert all(isinstance(outcome, InvalidInput) for outcome in outcomes)
    assert len(model.batches) == 1  # only the first request ran
    assert after == before


def test_a_deferred_request_answered_while_its_batch_is_being_made_is_not_made():
    async def scenario():
        model, parts = RecordingModel(delay_s=0.3), Parts()
        slow = parts.deferred(9)
        batcher = await started_batcher(model)
        first = await occupy(batcher, model)

        def slow_load() -> float:
            time.sleep(0.4)  # its deadline passes meanwhile: the next request's
            return slow.load()

        kept = asyncio.create_task(batcher.submit(dataclasses.replace(slow, load=slow_load), far_deadline()))
        late = asyncio.create_task(batcher.submit(parts.deferred(7), time.perf_counter() + 0.5))
        outcomes = await asyncio.gather(first, kept, late, return_exceptions=True)
        await batcher.drain(5)
        return model, parts, outcomes

    model, parts, (_, kept, late) = run(scenario())
    assert isinstance(late, DeadlineExceeded) and "while its batch computed" in str(late)
    assert parts.loaded == [9]
    np.testing.assert_array_equal(model.batches[1][:, 0], [9])
    np.testing.assert_array_equal(kept.outputs["y"], [[18, 18]])
