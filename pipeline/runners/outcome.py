"""What a runner returns for one batch, whether it ran on local Spark or as an EMR step, and how it reports."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

# progress(message, percentage or None): shown as the Luigi task's status message and progress bar.
Progress = Callable[[str, Optional[float]], None]


def _ignore(*_args) -> None:
    pass


@dataclass
class BatchOutcome:
    ok: bool  # the job (or step) finished successfully
    detail: str = ""  # one line: exit code, or the step's FailureDetails and its log location
    job_id: str = ""  # the EMR step id, or the local process id
    refused: str = ""  # the line of an AWS refusal the job told (spark.refusals), which its reports may lack


@dataclass
class Status:
    """Where a running batch tells what it does: a Luigi task's status message, progress bar and tracking URL
    (or nothing, outside Luigi)."""

    message: Callable[[str], None] = _ignore
    percentage: Callable[[float], None] = _ignore
    tracking_url: Callable[[str], None] = _ignore
