"""`LatencyModel`: how long one model variant takes to compute a batch of b items, `L(b)`.

Profiled at warm-up (a timed run at each power of two up to the maximum batch), then refitted
online from every measured batch: each batch size keeps a sliding window of its latest run
times (of the last `HORIZON_S`) and predicts their median, else its warm-up time; a size with
no time of its own is predicted by the least-squares line `L(b) = a·b + c` through the sizes
that have one (BentoML's fallback), never below the prediction of a smaller measured size.
Every prediction made for a batch that then ran is compared with the measured time, and the
ratios measured / predicted are kept: their spread gives the relative error
(`error_quantile`, shown in `/v1/models`, `/metrics` and `bench scheduling`) and the margin the
scheduler plans with (`planned`: the prediction times the 80th percentile of those ratios,
never below it), so that a batch predicted to just meet its deadline rarely runs past it.

A prediction too high corrects itself only if a batch still runs: a model profiled while
something else held the cores could be refused every request on its own predicted cost, and
so never be measured again. `recalibrate` takes a measurement made for that purpose (the
device scheduler's probe, when such a model's requests are being refused): it counts as a run,
and a warm-up profile found too high at that size is scaled down to it at every size.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping

# Measurements kept per batch size: enough to ride out a stray slow run, few enough to follow a
# change of load (other models competing for the cores) within a second or two.
WINDOW = 16
# Ratios measured / predicted kept for the error quantiles and the planning margin.
ERROR_WINDOW = 512
MARGIN_QUANTILE = 0.8
MAX_MARGIN = 3.0
# The margin is recomputed every this many measurements (it sorts the window).
MARGIN_EVERY = 16
# Measurements (and the margin) older than this are forgotten, back to the warm-up profile: a
# model none of whose requests ran for a while (all refused, as slow as it was) is judged again
# by what it costs alone, not by a burst long gone.
HORIZON_S = 10.0
# A probe run below this fraction of the warm-up profile's time scales the whole profile down.
PROFILE_TOO_HIGH = 0.5


def profile_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes timed at warm-up: the powers of two below `max_batch_size`, and it."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


class LatencyModel:
    """Predicted compute time of a batch, by its number of items. Thread-safe: measurements
    arrive from the runner threads, predictions are asked for on the event loop."""

    def __init__(self, max_batch_size: int, profile: Mapping[int, float] | None = None) -> None:
        self.max_batch_size = max_batch_size
        self._lock = threading.Lock()
        self._profile = dict(profile or {})
        self._runs: dict[int, deque[tuple[float, float]]] = {}  # (when, seconds) by batch size
        self._ratios: deque[float] = deque(maxlen=ERROR_WINDOW)
        self._margin = 1.0
        self._last_observed = -float("inf")
        self._next_expiry = 0.0
        self._table: dict[int, float] = {}
        self._line = (0.0, 0.0)
        self._refit()

    def predict(self, items: int) -> float:
        """Seconds to compute `items` (in chunks of at most the maximum batch)."""
        if items <= 0:
            return 0.0
        if time.monotonic() >= self._next_expiry:
            self._expire()
        full, rest = divmod(items, self.max_batch_size)
        seconds = full * self._predict_one(self.max_batch_size)
        return seconds + (self._predict_one(rest) if rest else 0.0)

    def planned(self, items: int) -> float:
        """Seconds to plan for `items`: the prediction with the margin its recent errors call for."""
        return self.predict(items) * self._margin

    def observe(self, items: int, seconds: float, predicted: float | None = None) -> None:
        """A batch of `items` ran in `seconds`; `predicted` is what was foreseen for it, if
        anything was (how far off it was is kept)."""
        if items <= 0 or seconds <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._last_observed = now
            self._runs.setdefault(min(items, self.max_batch_size), deque(maxlen=WINDOW)).append((now, seconds))
            if predicted is not None and predicted > 0:
                self._ratios.append(seconds / predicted)
                if len(self._ratios) % MARGIN_EVERY == 0:
                    ratios = sorted(self._ratios)
                    self._margin = min(max(ratios[int(MARGIN_QUANTILE * (len(ratios) - 1))], 1.0), MAX_MARGIN)
            self._refit()

    def recalibrate(self, items: int, seconds: float) -> bool:
        """A probe of `items` ran in `seconds` (no request's prediction to judge): kept as a run,
        and the warm-up profile scaled down by `seconds` / its time at `items` when that is below
        `PROFILE_TOO_HIGH` (a profile a little high is left to the runs to correct). Whether it was."""
        if items <= 0 or seconds <= 0:
            return False
        with self._lock:
            profiled = self._profile.get(min(items, self.max_batch_size))
            too_high = bool(profiled) and seconds < PROFILE_TOO_HIGH * profiled
            if too_high:
                scale = seconds / profiled
                self._profile = {size: value * scale for size, value in self._profile.items()}
        self.observe(items, seconds)
        return too_high

    def stale(self) -> bool:
        """No batch (or probe) measured within `HORIZON_S`: the predictions are the warm-up
        profile's, however long ago and under whatever load it was taken."""
        return time.monotonic() - self._last_observed > HORIZON_S

    def error_quantile(self, quantile: float) -> float | None:
        """The `quantile` of the relative prediction errors |predicted - measured| / measured
        kept (None before any)."""
        with self._lock:
            errors = sorted(abs(1.0 / ratio - 1.0) for ratio in self._ratios)
        if not errors:
            return None
        return errors[min(len(errors) - 1, int(quantile * len(errors)))]

    def table(self, sizes: Iterable[int] | None = None) -> dict[int, float]:
        """Predicted seconds at `sizes` (default: the warm-up profile's sizes)."""
        return {size: self.predict(size) for size in (sizes or profile_sizes(self.max_batch_size))}

    def _predict_one(self, items: int) -> float:
        table = self._table
        if items in table:
            return table[items]
        slope, intercept = self._line
        fitted = slope * items + intercept
        below = [seconds for size, seconds in table.items() if size < items]
        return max([fitted, *below]) if below else max(fitted, 0.0)

    def _expire(self) -> None:
        """Forget the measurements (and the margin) older than `HORIZON_S`; checked about once a second."""
        with self._lock:
            now = time.monotonic()
            self._next_expiry = now + 1.0
            since = now - HORIZON_S
            for runs in self._runs.values():
                while runs and runs[0][0] < since:
                    runs.popleft()
            if self._last_observed < since:
                self._margin = 1.0
            self._refit()

    def _refit(self) -> None:
        """The table: each size's recent median, else its warm-up profile."""
        table = dict(self._profile)
        table.update(
            {size: statistics.median(seconds for _, seconds in runs) for size, runs in self._runs.items() if runs}
        )
        self._line = _least_squares(table)
        self._table = table


def _least_squares(points: Mapping[int, float]) -> tuple[float, float]:
    """Slope and intercept of the line through `points` (flat through one point; none: 0)."""
    if not points:
        return 0.0, 0.0
    if len(points) == 1:
        ((size, seconds),) = points.items()
        return seconds / size, 0.0
    slope, intercept = statistics.linear_regression(list(points), list(points.values()))
    return max(slope, 0.0), intercept
