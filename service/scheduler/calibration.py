"""`AdmissionCalibration`: how far the door should stretch its estimate of the work ahead of a
model's new request, learnt from what became of the requests it let in.

The door (`DeviceScheduler.admit`) admits a request when the device work due before it, as the
latency models predict it, still leaves it time. Past capacity that estimate runs short: the
batches that really form are smaller than "every pending item in one batch", they run slower
beside each other and beside the decoding, and the event loop answers late. Each request admitted
then dropped or timed out (504) was read, decoded and queued for nothing, and that waste is what
made goodput fall past capacity.

So the requests whose admission the work ahead could have changed (with the largest stretch,
`MAX_FACTOR`, they would have been refused) report back: on time, or missed. A miss multiplies
the model's factor by `1 + STEP_UP`; one on time divides it by a smaller step, chosen so that the
factor settles where `TARGET_MISS` of those requests miss (a stochastic-approximation quantile
tracker, as Breakwater and SEDA steer admission by the delays they see). A request with nothing
ahead teaches nothing: stretching nothing changes nothing, and its misses (its own compute, its
answer) are not the estimate's. Between reports the factor halves its distance to 1 (in log
terms) every `HALF_LIFE_S`, so a model whose newcomers were all refused after a burst is not
kept refused for want of admitted requests to learn from. It stays within [1, `MAX_FACTOR`].
"""

from __future__ import annotations

import math

# The fraction of the admitted requests that teach allowed to miss their deadline.
TARGET_MISS = 0.01
STEP_UP = 0.05
# In log terms the factor settles where TARGET_MISS · log(1 + STEP_UP) = (1 − TARGET_MISS) · step down.
STEP_DOWN = math.log1p(STEP_UP) * TARGET_MISS / (1.0 - TARGET_MISS)
MAX_FACTOR = 4.0
HALF_LIFE_S = 10.0


class AdmissionCalibration:
    """One model's admission factor, as of `now` on the caller's clock (`time.perf_counter()` in
    the server, simulated time in `bench.scheduling_sim`). Event loop only."""

    def __init__(self, factor: float = 1.0, now: float = 0.0) -> None:
        self._factor = factor
        self._at = now
        self.on_time = 0
        self.missed = 0

    def factor(self, now: float) -> float:
        """The factor at `now`, eased towards 1 since the last report."""
        if self._factor > 1.0 and now > self._at:
            self._factor **= 0.5 ** ((now - self._at) / HALF_LIFE_S)
        self._at = max(self._at, now)
        return self._factor

    def observe(self, on_time: bool, now: float) -> None:
        """What became of one admitted request that teaches."""
        factor = self.factor(now)
        if on_time:
            self.on_time += 1
            self._factor = max(factor * math.exp(-STEP_DOWN), 1.0)
        else:
            self.missed += 1
            self._factor = min(factor * (1.0 + STEP_UP), MAX_FACTOR)
