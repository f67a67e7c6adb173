"""A thread-safe token bucket: the one place that keeps a writer at or below its WCU/s budget.

Callers reserve tokens before a request and sleep off any debt outside the lock, so the tokens consumed by time t
never exceed `burst + rate * t`, however many threads share the bucket and however large each take is.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; a take larger than what is saved waits off its debt."""

    def __init__(
        self,
        rate: float,
        burst: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not rate > 0:
            raise ValueError(f"token bucket rate must be positive, not {rate!r}")
        self.rate = float(rate)
        # A fifth of a second of savings: enough to absorb scheduling jitter, too little to overshoot a table.
        self.burst = float(burst) if burst is not None else max(1.0, self.rate * 0.2)
        if self.burst < 0:
            raise ValueError(f"token bucket burst must not be negative, not {burst!r}")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()

    def take(self, n: float = 1.0) -> None:
        """Block until `n` tokens are ours."""
        if n <= 0:
            return
        with self._lock:
            now = self._clock()
            tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate) - n
            self._tokens = tokens
            self._updated = now
        if tokens < 0:
            self._sleep(-tokens / self.rate)
