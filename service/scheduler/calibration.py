"""`AdmissionCalibration`: how far the door should stretch its estimate of the work ahead of a
model's new request, learnt from what became of the requests it let in.

The door (`DeviceScheduler.admit`) admits a request when the device work due before it, as the
latency models predict it, still leaves it time. Past capacity that estimate runs short: the
batches that really form are smaller than "every pending item in one batch", they run slower
beside each other and beside the decoding, and the event loop answers late. Each request admitted
then dropped (504) or answered after its deadline was read, decoded and queued for nothing, and
that waste is what made goodput fall past capacity.

So each admitted request reports back: on time, or missed. A miss multiplies the model's factor
by `1 + STEP_UP`; a request on time divides it by a smaller step, chosen so that the factor
settles where `TARGET_MISS` of the admitted requests miss (a stochastic-approximation quantile
tracker, as Breakwater and SEDA steer admission by the delays they see). The factor stays within
[1, `MAX_FACTOR`]: at low load nothing is ahead of a request, so it changes nothing there.
"""

from __future__ import annotations

import math

# The fraction of admitted requests allowed to miss their deadline (dropped or late).
TARGET_MISS = 0.01
STEP_UP = 0.05
# In log terms the factor settles where TARGET_MISS · log(1 + STEP_UP) = (1 − TARGET_MISS) · step down.
STEP_DOWN = math.log1p(STEP_UP) * TARGET_MISS / (1.0 - TARGET_MISS)
MAX_FACTOR = 4.0


class AdmissionCalibration:
    """One model's admission factor (event loop only)."""

    def __init__(self) -> None:
        self.factor = 1.0
        self.on_time = 0
        self.missed = 0

    def observe(self, on_time: bool) -> None:
        """What became of one admitted request."""
        if on_time:
            self.on_time += 1
            self.factor = max(self.factor * math.exp(-STEP_DOWN), 1.0)
        else:
            self.missed += 1
            self.factor = min(self.factor * (1.0 + STEP_UP), MAX_FACTOR)
