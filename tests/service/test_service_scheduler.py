"""The device scheduler with real batchers: which model runs next, early drops, admission at
the door, the waiting room, priorities, starvation, drain; and the latency model on its own."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from easerve.service.batcher import BatchingConfig, DynamicBatcher
from easerve.service.errors import DeadlineUnreachable, Overloaded, QueueFull, Unavailable
from easerve.service.scheduler.calibration import HALF_LIFE_S, MAX_FACTOR, AdmissionCalibration
from easerve.service.scheduler.device import DeviceScheduler, default_slots
from easerve.service.scheduler.latency import LatencyModel, profile_sizes

# The value of the probe inputs the batchers here are given (`probe_inputs`).
PROBE_VALUE = -1.0


class TimedModel:
    """Sleeps `seconds_per_item` per item (plus `fixed_s` per batch); records every batch of
    requests and how many of all the models sharing `running` computed at once, and counts the
    scheduler's probes apart (`probed`)."""

    def __init__(
        self, name: str, log: list[tuple[str, int]], running: list[int], seconds_per_item: float, fixed_s: float = 0.0
    ) -> None:
        self.name = name
        self.log = log
        self.running = running
        self.seconds_per_item = seconds_per_item
        self.fixed_s = fixed_s
        self.most_at_once = 0
        self.probed = 0
        self.failing_probes = False
        self.lock = threading.Lock()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = len(inputs["x"])
        probe = inputs["x"][0, 0] == PROBE_VALUE  # the scheduler measuring the model, not a request
        if probe and self.failing_probes:
            raise RuntimeError("the probe failed")
        with self.lock:
            self.running[0] += 1
            self.most_at_once = max(self.most_at_once, self.running[0])
        time.sleep(self.fixed_s + self.seconds_per_item * items)
        with self.lock:
            self.running[0] -= 1
        if probe:
            self.probed += 1
        else:
            self.log.append((self.name, items))
        return {"y": inputs["x"] * 2}


def row(value: float = 1.0) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 2), value, np.float32)}


def latency_of(model: TimedModel, max_batch: int) -> LatencyModel:
    """A latency model that knows `model`'s true run times."""
    return LatencyModel(
        max_batch, {size: model.fixed_s + model.seconds_per_item * size for size in profile_sizes(max_batch)}
    )


def batcher_on(
    scheduler: DeviceScheduler,
    model: TimedModel,
    latency: LatencyModel | None = None,
    priority: int = 0,
    **config: object,
) -> DynamicBatcher:
    settings = {"max_batch_size": 8, **config}
    batcher = DynamicBatcher(
        model.name,
        [model],
        BatchingConfig(**settings),  # type: ignore[arg-type]
        scheduler=scheduler,
        latency=latency,
        priority=priority,
        probe_inputs=row(PROBE_VALUE),
    )
    batcher.start()
    return batcher


def alone(seconds_per_item: float, **config: object) -> tuple[DeviceScheduler, DynamicBatcher, list[tuple[str, int]]]:
    """One model "m" on a slack scheduler of one slot, its latency model exact; the log of its
    batches. Call on the running loop."""
    log: list[tuple[str, int]] = []
    scheduler = DeviceScheduler("slack", 1)
    model = TimedModel("m", log, [0], seconds_per_item)
    settings = {"max_batch_size": 1, **config}
    batcher = batcher_on(scheduler, model, latency_of(model, settings["max_batch_size"]), **settings)  # type: ignore[arg-type]
    return scheduler, batcher, log


async def closed(scheduler: DeviceScheduler, batcher: DynamicBatcher) -> None:
    await batcher.drain(5)
    scheduler.close()


def test_the_slack_policy_runs_one_batch_at_a_time_per_slot_and_free_runs_models_side_by_side():
    async def scenario(policy: str, slots: int | None) -> int:
        log: list[tuple[str, int]] = []
        running = [0]
        scheduler = DeviceScheduler(policy, slots)  # type: ignore[arg-type]
        models = [TimedModel(name, log, running, 0.02) for name in ("a", "b", "c")]
        batchers = [batcher_on(scheduler, model) for model in models]
        deadline = time.perf_counter() + 10
        await asyncio.gather(*(batcher.submit(row(), deadline) for batcher in batchers for _ in range(3)))
        for batcher in batchers:
            await batcher.drain(5)
        scheduler.close()
        return max(model.most_at_once for model in models)

    assert asyncio.run(scenario("slack", 1)) == 1
    assert asyncio.run(scenario("fifo", 1)) == 1
    assert asyncio.run(scenario("free", None)) >= 2


def order_after_a_blocker(loose_s: float, tight_deadline_s: float) -> list[str]:
    """The order the device ran: a 0.1 s blocker, then "loose" (`loose_s` a run, deadline in 5 s)
    and "tight" (0.01 s a run, deadline in `tight_deadline_s`), queued in that order while the
    blocker computes."""

    async def scenario() -> list[tuple[str, int]]:
        log: list[tuple[str, int]] = []
        running = [0]
        scheduler = DeviceScheduler("slack", 1)
        models = [
            TimedModel("blocker", log, running, 0.1),
            TimedModel("loose", log, running, loose_s),
            TimedModel("tight", log, running, 0.01),
        ]
        batchers = {m.name: batcher_on(scheduler, m, latency_of(m, 8)) for m in models}
        first = asyncio.create_task(batchers["blocker"].submit(row(), time.perf_counter() + 10))
        await asyncio.sleep(0.03)  # the blocker computes
        later = asyncio.create_task(batchers["loose"].submit(row(), time.perf_counter() + 5))
        await asyncio.sleep(0.01)
        sooner = asyncio.create_task(batchers["tight"].submit(row(), time.perf_counter() + tight_deadline_s))
        await asyncio.gather(first, later, sooner)
        for batcher in batchers.values():
            await batcher.drain(5)
        scheduler.close()
        return log

    return [name for name, _ in asyncio.run(scenario())]


def test_with_slack_to_spare_the_oldest_batch_runs_first():
    assert order_after_a_blocker(loose_s=0.01, tight_deadline_s=0.5) == ["blocker", "loose", "tight"]


def test_when_the_oldest_would_make_another_miss_the_least_slack_runs_first():
    # "tight" has ~0.08 s of slack when the blocker ends; "loose" first (0.15 s) would make it late.
    assert order_after_a_blocker(loose_s=0.15, tight_deadline_s=0.15) == ["blocker", "tight", "loose"]


def test_a_request_that_cannot_meet_its_deadline_is_answered_at_once_and_never_computed():
    async def scenario():
        log: list[tuple[str, int]] = []
        running = [0]
        scheduler = DeviceScheduler("slack", 1)
        slow = TimedModel("slow", log, running, 0.2)
        batcher = batcher_on(scheduler, slow, latency_of(slow, 8))
        started = time.perf_counter()
        with pytest.raises(DeadlineUnreachable) as refused:
            await batcher.submit(row(), time.perf_counter() + 0.05)
        answered_after = time.perf_counter() - started
        await batcher.drain(5)
        scheduler.close()
        return log, answered_after, refused.value, scheduler.stats.probes

    log, answered_after, error, probes = asyncio.run(scenario())
    assert log == []
    assert probes == 1  # dropped on its own predicted time, never measured: the prediction is checked once
    assert answered_after < 0.04
    assert error.status_code == 504
    assert "not computed" in error.message


def test_the_door_refuses_what_the_work_already_admitted_leaves_no_time_for():
    async def scenario():
        scheduler, batcher, log = alone(0.05)
        soon = time.perf_counter()
        admitted = [batcher.expect(soon + 0.31) for _ in range(6)]  # 0.3 s of work on its way
        with pytest.raises(Overloaded) as refused:
            batcher.expect(soon + 0.32)  # due after all of it, and no time left once it is done
        spare = batcher.expect(time.perf_counter() + 2)  # later still: fits
        for arrival in [*admitted, spare]:
            arrival.leave()
        await closed(scheduler, batcher)
        return refused.value

    error = asyncio.run(scenario())
    assert error.status_code == 503
    assert "work due before it" in error.message
    # Every part of the wait it was refused for is named, so an operator can tell them apart.
    assert "to reach its queue" in error.message and "after their batch" in error.message
    assert "ms are left" in error.message, error.message
    assert error.headers()["Retry-After"]


def test_the_door_stretches_the_work_ahead_by_what_became_of_the_requests_it_admitted():
    """0.1 s of work is due before a newcomer that has 0.25 s: it fits as predicted, and teaches
    (the largest stretch would have refused it); once its model's admitted requests have been
    missing their deadlines, the door plans the work ahead longer and refuses it, saying why;
    requests on time again bring the plan back. A request with nothing ahead teaches nothing."""

    async def scenario():
        scheduler, batcher, log = alone(0.05)
        soon = time.perf_counter()
        alone_ahead = batcher.expect(soon + 0.25)
        alone_ahead.concluded(False)  # nothing was ahead of it: not the estimate's miss
        untaught = batcher.calibration.factor(time.perf_counter())
        alone_ahead.leave()
        admitted = [batcher.expect(soon + 0.2) for _ in range(2)]
        teaching = batcher.expect(soon + 0.25)  # fits: 0.1 s ahead and its own 0.05 s
        teaching.concluded(False)
        teaching.leave()
        for _ in range(20):
            batcher.calibration.observe(False, time.perf_counter())
        stretched = batcher.calibration.factor(time.perf_counter())
        with pytest.raises(Overloaded) as refused:
            batcher.expect(soon + 0.25)
        while batcher.calibration.factor(time.perf_counter()) > 1.0:
            batcher.calibration.observe(True, time.perf_counter())
        batcher.expect(soon + 0.25).leave()
        for arrival in admitted:
            arrival.leave()
        await closed(scheduler, batcher)
        return untaught, batcher.calibration.missed, stretched, refused.value

    untaught, missed, stretched, error = asyncio.run(scenario())
    assert untaught == 1.0 and missed == 21  # the one that had work ahead, and the 20 told
    assert stretched > 2.5
    assert "lately fared" in error.message, error.message


def test_the_admission_factor_settles_where_the_target_share_of_admitted_requests_miss():
    """Missing more often than `TARGET_MISS` drives the factor up to its bound; less often, back
    down to 1, never below."""
    more, fewer = AdmissionCalibration(), AdmissionCalibration()
    for _ in range(200):
        for step in range(20):  # 5 % miss
            more.observe(step != 19, 0.0)
    for _ in range(200):
        for step in range(200):  # 0.5 % miss
            fewer.observe(step != 0, 0.0)
    assert more.factor(0.0) == MAX_FACTOR
    assert fewer.factor(0.0) == 1.0
    assert (more.missed, fewer.missed) == (200, 200)


def test_without_reports_the_admission_factor_eases_back_to_1():
    """A model whose newcomers are all refused has no admitted request to learn from: its factor
    halves its distance to 1 (in log terms) every half-life."""
    calibration = AdmissionCalibration(MAX_FACTOR, now=10.0)
    assert calibration.factor(10.0 + HALF_LIFE_S) == pytest.approx(MAX_FACTOR**0.5)
    assert calibration.factor(10.0 + 10 * HALF_LIFE_S) == pytest.approx(MAX_FACTOR ** (0.5**10))


def test_an_admitted_request_is_reachable_by_its_own_compute_alone():
    """Checked again before its decoding, a request is not counted ahead of itself: alone, with
    its 20 ms run inside its 30 ms deadline, it is reachable; 15 ms later it no longer is."""

    async def scenario():
        scheduler, batcher, log = alone(0.02)
        arrival = batcher.expect(time.perf_counter() + 0.03)
        reachable_at_once = arrival.reachable()
        await asyncio.sleep(0.015)
        reachable_later = arrival.reachable()
        arrival.leave()
        await closed(scheduler, batcher)
        return reachable_at_once, reachable_later

    assert asyncio.run(scenario()) == (True, False)


def test_the_door_protects_requests_admitted_earlier_from_a_more_urgent_newcomer():
    async def scenario():
        scheduler, batcher, log = alone(0.05)
        soon = time.perf_counter()
        admitted = [batcher.expect(soon + 0.21) for _ in range(4)]  # 0.2 s of work due by then
        with pytest.raises(Overloaded) as refused:
            batcher.expect(soon + 0.15)  # would fit itself, but make one of those late
        for arrival in admitted:
            arrival.leave()
        await closed(scheduler, batcher)
        return refused.value

    assert "would make that late" in asyncio.run(scenario()).message


def test_past_a_full_queue_requests_wait_at_the_door_and_go_in_first_come_first_in():
    async def scenario():
        scheduler, batcher, log = alone(0.02, max_batch_size=2, max_queue_size=2, max_waiting=2)
        deadline = time.perf_counter() + 5
        inside = [batcher.expect(deadline) for _ in range(2)]
        for arrival in inside:
            await arrival.enter()  # room for both
        waiting = [batcher.expect(deadline) for _ in range(2)]
        entering = [asyncio.create_task(arrival.enter()) for arrival in waiting]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in entering)
        turned_away = batcher.expect(deadline)
        with pytest.raises(QueueFull):
            await turned_away.enter()
        inside[0].leave()  # one gives up: the first waiting one goes in
        await asyncio.sleep(0.01)
        assert [task.done() for task in entering] == [True, False]
        first_in = asyncio.create_task(batcher.submit(row(), deadline))
        inside[1].leave(queued=True)
        waiting[0].leave(queued=True)
        await first_in
        await asyncio.wait_for(entering[1], 2)  # the batch took both queued: room again
        waiting[1].leave()
        await batcher.drain(5)
        scheduler.close()

    asyncio.run(scenario())


def test_a_request_waits_at_the_door_only_while_its_deadline_allows():
    async def scenario():
        scheduler, batcher, log = alone(0.01, max_queue_size=1)
        holder = batcher.expect(time.perf_counter() + 10)
        await holder.enter()
        started = time.perf_counter()
        late = batcher.expect(started + 0.15)
        with pytest.raises(Overloaded):
            await late.enter()
        waited = time.perf_counter() - started
        holder.leave()
        await batcher.drain(5)
        scheduler.close()
        return waited

    assert 0.1 < asyncio.run(scenario()) < 0.15


def low_high_and_blocker(
    scheduler: DeviceScheduler, log: list[tuple[str, int]], high_s: float
) -> dict[str, DynamicBatcher]:
    """Two models of one batch each, "high" of priority 1 (`high_s` a run), and a slow
    "blocker" to hold the device while the test queues their requests."""
    running = [0]
    models = {
        "low": (TimedModel("low", log, running, 0.02), 0),
        "high": (TimedModel("high", log, running, high_s), 1),
        "blocker": (TimedModel("blocker", log, running, 0.1), 0),
    }
    return {
        name: batcher_on(scheduler, model, latency_of(model, 1), priority=priority, max_batch_size=1)
        for name, (model, priority) in models.items()
    }


async def blocked_then(
    submissions: list[tuple[str, float]], count: int = 1, high_s: float = 0.02
) -> list[tuple[str, int]]:
    """The order the device ran: the blocker first, then `count` requests of each
    (model, seconds to its deadline) of `submissions`, all queued while the blocker computes."""
    log: list[tuple[str, int]] = []
    scheduler = DeviceScheduler("slack", 1)
    batchers = low_high_and_blocker(scheduler, log, high_s)
    first = asyncio.create_task(batchers["blocker"].submit(row(), time.perf_counter() + 10))
    await asyncio.sleep(0.03)
    deadline_of = {seconds: time.perf_counter() + seconds for _, seconds in submissions}
    tasks = [
        asyncio.create_task(batchers[name].submit(row(), deadline_of[seconds]))
        for name, seconds in submissions
        for _ in range(count)
    ]
    await asyncio.gather(first, *tasks)
    for batcher in batchers.values():
        await batcher.drain(5)
    scheduler.close()
    return log


def test_a_higher_priority_model_runs_first_and_the_lower_one_still_runs():
    # Equal deadlines, so equal slack: priority decides.
    log = asyncio.run(blocked_then([("low", 10.0), ("high", 10.0)], count=3))
    assert [name for name, _ in log] == ["blocker", "high", "high", "high", "low", "low", "low"]


def test_a_lower_priority_batch_runs_ahead_when_it_would_miss_and_the_higher_one_can_wait():
    # "low" has ~0.1 s of slack when the blocker ends: "high" first (0.15 s) would make it late.
    log = asyncio.run(blocked_then([("low", 0.2), ("high", 5.0)], high_s=0.15))
    assert [name for name, _ in log] == ["blocker", "low", "high"]


def test_a_model_slower_than_predicted_cannot_starve_another():
    """`slow` really takes 5x what its latency model says at first; the other model, sent a
    steady stream with deadlines its own run time allows, keeps being served, and the latency
    model learns `slow`'s real times."""

    async def scenario():
        log: list[tuple[str, int]] = []
        running = [0]
        scheduler = DeviceScheduler("slack", 1)
        slow = TimedModel("slow", log, running, 0.05)
        quick = TimedModel("quick", log, running, 0.005)
        believed = LatencyModel(4, dict.fromkeys(profile_sizes(4), 0.01))
        slow_batcher = batcher_on(scheduler, slow, believed, max_batch_size=4)
        quick_batcher = batcher_on(scheduler, quick, latency_of(quick, 4), max_batch_size=4)

        slow_results, quick_results = await asyncio.gather(
            _sent(slow_batcher, 40, 0.01, 2.0), _sent(quick_batcher, 40, 0.01, 0.3)
        )
        for batcher in (slow_batcher, quick_batcher):
            await batcher.drain(5)
        scheduler.close()
        return slow_results, quick_results, believed.predict(1)

    slow_results, quick_results, learnt = asyncio.run(scenario())
    assert sum(quick_results) >= 0.9 * len(quick_results)
    assert sum(slow_results) > 0
    assert learnt > 0.03  # from the 0.01 it was told towards the true 0.05


async def _sent(
    batcher: DynamicBatcher, count: int, gap_s: float, deadline_s: float, through_the_door: bool = False
) -> list[bool]:
    """`count` requests `gap_s` apart, each due `deadline_s` after it is sent and, with
    `through_the_door`, admitted at the door first (as the server does); which were answered."""

    async def one() -> bool:
        deadline = time.perf_counter() + deadline_s
        try:
            if through_the_door:
                batcher.expect(deadline).leave(queued=True)
            await batcher.submit(row(), deadline)
            return True
        except Exception:
            return False

    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(gap_s)
    return list(await asyncio.gather(*tasks))


def test_a_model_believed_too_slow_for_its_deadlines_is_probed_and_then_served():
    """Its profile says 0.2 s a run (taken while something else held the cores, say); it
    really takes 0.005 s and its requests allow 0.05 s. The door refuses them on the
    prediction, so no batch would ever run to correct it: a probe measures it, and the
    requests after are served."""

    async def scenario():
        log: list[tuple[str, int]] = []
        scheduler = DeviceScheduler("slack", 1)
        quick = TimedModel("quick", log, [0], 0.005)
        believed = LatencyModel(4, dict.fromkeys(profile_sizes(4), 0.2))
        batcher = batcher_on(scheduler, quick, believed, max_batch_size=4)
        served = await _sent(batcher, 30, 0.01, 0.05, through_the_door=True)
        await closed(scheduler, batcher)
        return served, believed.predict(1), believed.predict(4), scheduler.stats.probes, quick.probed

    served, predicted_1, predicted_4, probes, probed = asyncio.run(scenario())
    assert not served[0]  # refused on the prediction
    assert all(served[10:])  # once probed, served
    assert probes == probed == 1
    assert predicted_1 < 0.02  # measured
    assert predicted_4 < 0.2 * 0.1  # the profile scaled down with it


def test_a_model_rightly_predicted_too_slow_is_probed_once_within_the_horizon():
    """The same refusals, but the prediction is right (0.2 s a run, 0.05 s allowed): one
    probe confirms it and the requests go on being refused; no probe after it for a while."""

    async def scenario():
        log: list[tuple[str, int]] = []
        scheduler = DeviceScheduler("slack", 1)
        slow = TimedModel("slow", log, [0], 0.2)
        believed = latency_of(slow, 4)
        batcher = batcher_on(scheduler, slow, believed, max_batch_size=4)
        served = await _sent(batcher, 40, 0.01, 0.05, through_the_door=True)
        await closed(scheduler, batcher)
        return served, log, scheduler.stats.probes, slow.probed

    served, log, probes, probed = asyncio.run(scenario())
    assert not any(served)
    assert probes == probed == 1
    assert log == []  # no request computed


def test_a_failed_probe_is_not_run_again_at_once():
    async def scenario():
        scheduler = DeviceScheduler("slack", 1)
        quick = TimedModel("quick", [], [0], 0.005)
        quick.failing_probes = True
        batcher = batcher_on(scheduler, quick, LatencyModel(4, dict.fromkeys(profile_sizes(4), 0.2)), max_batch_size=4)
        served = await _sent(batcher, 30, 0.01, 0.05, through_the_door=True)
        await closed(scheduler, batcher)
        return served, scheduler.stats.probes

    served, probes = asyncio.run(scenario())
    assert not any(served)
    assert probes == 1


def test_no_probe_while_the_model_has_requests_admitted_or_another_model_work_queued():
    """A probe takes a slot: not while requests admitted at the door are on their way (their
    admission counted on it), nor while another model's requests are queued for the slot; and
    while it runs, the other model's batch waits for the one slot."""

    async def scenario():
        running = [0]
        scheduler = DeviceScheduler("slack", 1)
        suspect = TimedModel("suspect", [], running, 0.05)
        other = TimedModel("other", [], running, 0.01)
        believed = LatencyModel(1, {1: 0.5})
        suspect_batcher = batcher_on(scheduler, suspect, believed, max_batch_size=1)
        other_batcher = batcher_on(scheduler, other, latency_of(other, 1), max_batch_size=1)
        admitted = suspect_batcher.expect(time.perf_counter() + 5)  # on its way to the queue
        with pytest.raises(Overloaded):
            suspect_batcher.expect(time.perf_counter() + 0.1)  # refused on its own predicted 0.5 s
        await asyncio.sleep(0.05)
        probed_while_admitted = scheduler.stats.probes
        admitted.leave()
        with pytest.raises(Overloaded):
            suspect_batcher.expect(time.perf_counter() + 0.1)  # again, now with nothing on its way
        await asyncio.sleep(0.01)
        probes_started = scheduler.stats.probes
        answer = await other_batcher.submit(row(), time.perf_counter() + 2)  # waits for the probe's slot
        for batcher in (suspect_batcher, other_batcher):
            await batcher.drain(5)
        scheduler.close()
        return probed_while_admitted, probes_started, answer, suspect.most_at_once, other.most_at_once

    probed_while_admitted, probes_started, answer, suspect_at_once, other_at_once = asyncio.run(scenario())
    assert probed_while_admitted == 0
    assert probes_started == 1
    assert answer.outputs["y"][0, 0] == 2.0
    assert suspect_at_once == other_at_once == 1  # the probe held the one slot: never both at once


def test_draining_one_batcher_answers_its_queue_while_the_others_go_on():
    async def scenario():
        log: list[tuple[str, int]] = []
        running = [0]
        scheduler = DeviceScheduler("slack", 1)
        first = TimedModel("first", log, running, 0.02)
        second = TimedModel("second", log, running, 0.02)
        batchers = [batcher_on(scheduler, model, latency_of(model, 8)) for model in (first, second)]
        deadline = time.perf_counter() + 10
        queued = [asyncio.create_task(batchers[0].submit(row(i), deadline)) for i in range(10)]
        await asyncio.sleep(0)
        await batchers[0].drain(5)
        outcomes = await asyncio.gather(*queued)
        after = await batchers[1].submit(row(), time.perf_counter() + 5)
        await batchers[1].drain(5)
        scheduler.close()
        return outcomes, after

    outcomes, after = asyncio.run(scenario())
    assert [float(outcome.outputs["y"][0, 0]) for outcome in outcomes] == [2.0 * i for i in range(10)]
    assert after.outputs["y"][0, 0] == 2.0


def test_default_slots_follow_the_threads_one_run_uses():
    assert default_slots("free", 0) is None
    assert default_slots("fifo", 4, cores=8) == 1
    assert default_slots("slack", 0, cores=8) == 2
    assert default_slots("slack", 2, cores=8) == 4
    with pytest.raises(ValueError):
        DeviceScheduler("slack", 0)


def test_the_latency_model_predicts_the_profile_then_learns_from_measured_runs():
    latency = LatencyModel(32, {1: 0.002, 2: 0.003, 4: 0.005, 8: 0.009, 16: 0.017, 32: 0.033})
    assert latency.predict(8) == pytest.approx(0.009)
    assert 0.009 < latency.predict(12) < 0.017  # between measured sizes: the fitted line
    assert latency.predict(40) == pytest.approx(0.033 + 0.009)  # a full batch, then 8
    for _ in range(20):
        latency.observe(8, 0.018, latency.predict(8))
    assert latency.predict(8) == pytest.approx(0.018)  # the window's median moved
    assert latency.error_quantile(0.95) is not None
    assert latency.planned(8) >= latency.predict(8)


def test_a_probe_scales_a_profile_found_too_high_down_and_counts_as_a_run():
    latency = LatencyModel(4, {1: 0.1, 2: 0.2, 4: 0.4})
    assert latency.stale()
    assert latency.recalibrate(1, 0.01)
    assert not latency.stale()
    assert latency.predict(1) == pytest.approx(0.01)
    assert latency.predict(4) == pytest.approx(0.04)
    assert not latency.recalibrate(1, 0.05)  # slower than the profile now says: real runs will show it
    assert latency.predict(4) == pytest.approx(0.04)
    assert not LatencyModel(1, {1: 0.1}).recalibrate(1, 0.06)  # a profile a little high is left to the runs


def test_the_latency_models_margin_covers_runs_slower_than_predicted():
    latency = LatencyModel(4, {1: 0.01, 2: 0.01, 4: 0.01})
    for index in range(64):
        measured = 0.01 * (1.5 if index % 2 else 1.0)  # half the runs 50% slower
        latency.observe(1, measured, 0.01)
    assert latency.planned(1) / latency.predict(1) >= 1.2
    assert latency.error_quantile(0.5) is not None


def test_requests_waiting_at_the_door_are_refused_when_the_model_drains():
    async def scenario():
        scheduler, batcher, _ = alone(0.01, max_queue_size=1)
        holder = batcher.expect(time.perf_counter() + 10)
        await holder.enter()
        waiting = batcher.expect(time.perf_counter() + 10)
        entering = asyncio.create_task(waiting.enter())
        await asyncio.sleep(0.02)
        assert not entering.done()
        await closed(scheduler, batcher)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(entering, 1)  # at once, not at the end of its patience
        holder.leave()

    asyncio.run(scenario())
