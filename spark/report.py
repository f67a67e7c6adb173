"""Per-run reports: what the job read and did for one run, and the rule that decides whether the run is done.

The pipeline marks a run only when `completeness_problem(report)` is None, so this module is the one place that
says what "complete" means.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional

MALFORMED_REASONS = ("field_count", "event_id", "etl_tstamp")
MAX_EXAMPLES = 10

# Every line of a run ends in exactly one of these buckets; `lines` is their sum.
OUTCOMES = (
    "no_fingerprint",  # fingerprint enrichment off: the shredder would give a random fingerprint
    "in_run_duplicates",  # same (eventId, fingerprint) again within the run
    "batch_duplicates",  # the key is written by an earlier run of the same batch
    "expired",  # ttl already past: DynamoDB would delete it within days
    "written",
    "already_present",  # an item with an earlier or equal etlTime was already in the table
    "write_failures",
    "not_written",  # valid events of a run that failed before writing (unreadable object, too malformed)
)


def empty_counts() -> Dict:
    counts = {"lines": 0, "malformed": {r: 0 for r in MALFORMED_REASONS}, "malformed_examples": []}
    counts.update({k: 0 for k in OUTCOMES})
    counts["throttle_retries"] = 0
    return counts


def new_report(run: str, batch_id: str) -> Dict:
    return {
        "run": run,
        "batch_id": batch_id,
        "status": "ok",  # 'ok' or 'failed'
        "errors": [],  # one line each, never a line's content nor a secret
        "etl_time": None,  # epoch seconds written for the run's events (etl_time='run'), or the earliest
        "objects": [],  # {"key", "bytes", "lines", "error"}
        "counts": empty_counts(),
        "timings": {},
        "count_only": False,
    }


def counts_add_up(counts: Dict) -> bool:
    malformed = sum(counts["malformed"].get(r, 0) for r in MALFORMED_REASONS)
    return counts["lines"] == malformed + sum(counts[k] for k in OUTCOMES)


def completeness_problem(report: Dict) -> Optional[str]:
    """Why this run must not be marked done, or None when every item it owes is in the table."""
    if report.get("count_only"):
        return "count-only pass: nothing was written"
    if report.get("status") != "ok":
        return "; ".join(report.get("errors") or ["run failed"])
    unread = [o["key"] for o in report.get("objects", []) if o.get("error")]
    if unread:
        return f"unreadable objects: {', '.join(unread[:5])}"
    counts = report["counts"]
    if counts.get("write_failures") or counts.get("not_written"):
        return f"{counts.get('write_failures', 0)} write failures, {counts.get('not_written', 0)} events not written"
    if not counts_add_up(counts):
        return "counts do not add up"
    return None


def dumps(report: Dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True)


def loads(text: str) -> Dict:
    return json.loads(text)


def merge_examples(examples: List[str], more: List[str]) -> List[str]:
    return (examples + more)[:MAX_EXAMPLES]
