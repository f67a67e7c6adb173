"""How the runs to do are cut into batches: consecutive runs, oldest first, sized by work rather than by count.

Each batch pays a fixed start (a spark-submit and a JVM locally, a YARN application on EMR) during which the write
budget sits idle, so a batch holds enough writing to make that start a small share: runs are grouped until the
batch's estimated writing at its budget reaches `minutes`, or it holds `max_runs` runs. A kill loses at most the
batch it interrupts, so `minutes` is also the most writing a kill can cost. Pure: the estimates come in.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

# Measured here: `spark-submit` of the job up to its first action on 2 cores (docs/operations.md, resume).
LOCAL_START_SECONDS = 7.0
# An EMR step on a running cluster: YARN application, executors and the job zip, before the first write.
EMR_STEP_START_SECONDS = 45.0


@dataclass(frozen=True)
class Batch:
    """One Spark job's runs, oldest first, and the events it is estimated to write."""

    runs: Tuple[str, ...]
    events: int = 0
    ident: str = ""  # an id of its own (an import's, a stamped maintenance batch's); else made from the runs

    @property
    def id(self) -> str:
        return self.ident or batch_id(self.runs)

    @property
    def first(self) -> str:
        return self.runs[0]

    @property
    def last(self) -> str:
        return self.runs[-1]

    def describe(self) -> str:
        """'3 runs (first .. last)': how an operator tells batches apart."""
        count = f"{len(self.runs):,} run" + ("" if len(self.runs) == 1 else "s")
        return f"{count} ({self.first})" if len(self.runs) == 1 else f"{count} ({self.first} .. {self.last})"


def batch_id(runs: Sequence[str]) -> str:
    """Deterministic: the same runs always make the same batch id, whatever else changed."""
    digest = hashlib.sha1(",".join(runs).encode()).hexdigest()[:8]
    return f"{runs[0]}_{len(runs)}_{digest}"


def by_work(runs: Sequence[str], events: Dict[str, int], budget: float, minutes: float, max_runs: int
            ) -> List[Batch]:
    """Consecutive runs grouped until a batch holds `minutes` of writing at `budget` WCU/s (1 WCU an event) or
    `max_runs` runs; a run bigger than the target is a batch of its own."""
    target = budget * minutes * 60.0
    batches: List[Batch] = []
    current: List[str] = []
    work = 0
    for run in sorted(runs):
        current.append(run)
        work += events.get(run, 0)
        if len(current) >= max_runs or work >= target:
            batches.append(Batch(tuple(current), work))
            current, work = [], 0
    if current:
        batches.append(Batch(tuple(current), work))
    return batches


def by_count(runs: Sequence[str], size: int, prefix: str = "") -> List[Batch]:
    """Fixed-size batches, ids starting with `prefix` (maintenance: a clean or verify of this invocation)."""
    ordered = sorted(runs)
    chunks = [tuple(ordered[i:i + size]) for i in range(0, len(ordered), size)]
    return [Batch(chunk, 0, prefix + batch_id(chunk) if prefix else "") for chunk in chunks]


def start_seconds(runner: str) -> float:
    return EMR_STEP_START_SECONDS if runner == "emr" else LOCAL_START_SECONDS

