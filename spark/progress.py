"""A one-line progress report at a steady interval while a batch runs, on the driver's log."""
from __future__ import annotations

import logging
import threading
import time

LOG = logging.getLogger("manifest.job")
PROGRESS_SECONDS = 30.0  # between progress lines (spec.extra["progress_seconds"] overrides)


class Progress(threading.Thread):
    """The read pass counts Spark tasks; an action pass is paced by its budget, so its share done is estimated from
    the time spent against the events to settle at that rate (capped below 100 until the pass ends).
    """

    READ_SHARE = 30.0  # of the batch's percentage

    def __init__(self, sc, interval: float):
        super().__init__(daemon=True, name="progress")
        self.sc, self.interval = sc, interval
        self.phase, self.events, self.rate, self.unit = "listing", 0, 0.0, ""
        self.started = self.phase_started = time.monotonic()
        self._halt = threading.Event()  # not `_stop`: threading.Thread has a method of that name

    def enter(self, phase: str, events: int = 0, rate: float = 0.0, unit: str = "") -> None:
        """A new phase; an action pass names the events it settles and its budget (`rate` in `unit`)."""
        self.phase, self.events, self.rate, self.unit = phase, events, rate, unit
        self.phase_started = time.monotonic()

    def line(self) -> str:
        elapsed = time.monotonic() - self.phase_started
        if self.events and self.rate:
            share = min(0.99, elapsed * self.rate / self.events)
            pct = self.READ_SHARE + (100 - self.READ_SHARE) * share
            detail = (f"{self.phase} ~{int(share * self.events):,} of ~{self.events:,} items at {self.rate:g} "
                      f"{self.unit}")
        else:
            done = total = 0
            tracker = self.sc.statusTracker()
            for stage in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage)
                if info:
                    done, total = done + info.numCompletedTasks, total + info.numTasks
            pct = self.READ_SHARE * done / total if total else 0.0
            detail = f"{self.phase}: {done}/{total} tasks"
        return f"progress: {pct:.0f}% {detail}, {time.monotonic() - self.started:.0f} s elapsed"

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            LOG.info("%s", self.line())

    def stop(self) -> None:
        self._halt.set()
