"""Run ids of the enriched archive: parsing, the --since filter, enumeration and batching."""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Dict, List, Optional, Tuple

from spark import storage
from spark.runid import parse_run_id, run_of_folder

from .errors import PipelineError


def parse_since(value: str, flag: str = "--since", time_of_day: str = "00-00-00") -> Optional[str]:
    """--since (or another inclusive bound) as a run id; a bare date means that time of its day. Empty: no bound."""
    value = (value or "").strip()
    if not value:
        return None
    if len(value) == 10:
        try:
            return datetime.strptime(value, "%Y-%m-%d").strftime(f"%Y-%m-%d-{time_of_day}")
        except ValueError:
            pass
    run = parse_run_id(value)
    if run is None:
        raise PipelineError(f"{flag} {value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DD-HH-mm-ss")
    return run


def enumerate_runs(archive: storage.Location, client=None) -> Tuple[List[str], List[Dict[str, str]]]:
    """All run ids in the archive, oldest first, and the folders skipped with the reason why."""
    runs, skipped = [], []
    for name in storage.list_children(archive, client):
        run = run_of_folder(name)
        if run is None:
            skipped.append({"run": name, "reason": "not a run folder (expected run=YYYY-MM-DD-HH-MM-SS)"})
        else:
            runs.append(run)
    return sorted(runs), skipped


def split_since(runs: List[str], since: Optional[str]) -> Tuple[List[str], List[str]]:
    """(runs at or after since, runs before it); run ids sort as their timestamps."""
    if since is None:
        return list(runs), []
    return [r for r in runs if r >= since], [r for r in runs if r < since]


def batch_id(runs: List[str]) -> str:
    """Deterministic: the same runs always make the same batch id, whatever else changed."""
    digest = hashlib.sha1(",".join(runs).encode()).hexdigest()[:8]
    return f"{runs[0]}_{len(runs)}_{digest}"


def make_batches(runs: List[str], size: int) -> List[Tuple[str, List[str]]]:
    if size < 1:
        raise PipelineError(f"--batch-size must be at least 1, not {size}")
    ordered = sorted(runs)
    chunks = [ordered[i:i + size] for i in range(0, len(ordered), size)]
    return [(batch_id(chunk), chunk) for chunk in chunks]
