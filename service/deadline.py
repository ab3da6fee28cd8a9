"""`Deadline`: the moment a request must be answered by, checked between the steps of long work.

Worker threads cannot be interrupted, so long CPU work (decoding several images, drawing masks)
calls `check` between steps and stops with `DeadlineExceeded` once the request's answer could
no longer be on time; the handler has answered 504 by then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from easerve.service.errors import DeadlineExceeded


@dataclass(frozen=True)
class Deadline:
    at: float  # on time.perf_counter()

    def remaining_s(self) -> float:
        return self.at - time.perf_counter()

    def check(self, doing: str) -> None:
        """DeadlineExceeded naming what was being done, if the deadline has passed."""
        if time.perf_counter() >= self.at:
            raise DeadlineExceeded(f"deadline exceeded while {doing}")
