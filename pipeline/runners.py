"""What a runner returns for one batch, whether it ran on local Spark or as an EMR step."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

# progress(message, percentage or None): shown as the Luigi task's status message and progress bar.
Progress = Callable[[str, Optional[float]], None]


@dataclass
class BatchOutcome:
    ok: bool  # the job (or step) finished successfully
    detail: str = ""  # one line: exit code, or the step's FailureDetails and its log location
    job_id: str = ""  # the EMR step id, or the local process id
