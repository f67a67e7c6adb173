"""Per-run reports: what the job read and did for one run, and the rule that decides whether the run is done.

The pipeline marks a run only when `completeness_problem(report)` is None, so this module is the one place that
says what "complete" means. A batch's reports are `run=<id>.json` in the folder its spec names.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional

from spark.runid import file_name
from spark.storage import Location

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


# The same rule for the maintenance modes of the job (spec.JOB_MODES): every line in exactly one bucket.
CLEAN_OUTCOMES = (
    "no_fingerprint",
    "in_run_duplicates",
    "deleted",  # the item held the run's etlTime: deleted
    "not_present",  # no item for the key (or deleted a moment ago for an earlier run of the batch)
    "kept_older",  # the item holds an earlier etlTime: another run's, never touched
    "kept_newer",  # the item holds a later etlTime: a later run's, never touched
    "delete_failures",
    "not_cleaned",  # valid events of a run that failed before deleting
)
VERIFY_OUTCOMES = (
    "no_fingerprint",
    "in_run_duplicates",
    "expired",  # ttl already past: the populator does not write it and DynamoDB deletes it
    "not_sampled",  # left out of the --sample
    "found",  # the item is there with an etlTime at or before the run's
    "missing",  # no item: the shredder would take the event for new
    "later_etl_time",  # the item's etlTime is after the run's: the manifest is wrong for this run
    "read_failures",
    "not_checked",  # valid events of a run that failed before reading
)
# import: the populate buckets, "written" meaning staged for ImportTable (nothing can be "already_present").
MODE_OUTCOMES = {"populate": OUTCOMES, "clean": CLEAN_OUTCOMES, "verify": VERIFY_OUTCOMES, "import": OUTCOMES}
# Per mode: the buckets that mean the run's work is not done, the last one being "never attempted".
MODE_FAILURES = {"populate": ("write_failures", "not_written"), "clean": ("delete_failures", "not_cleaned"),
                 "verify": ("read_failures", "not_checked"), "import": ("write_failures", "not_written")}


def empty_counts(mode: str = "populate") -> Dict:
    counts = {"lines": 0, "malformed": {r: 0 for r in MALFORMED_REASONS}, "malformed_examples": []}
    counts.update({k: 0 for k in MODE_OUTCOMES[mode]})
    counts["throttle_retries"] = 0
    return counts


def new_report(run: str, batch_id: str, mode: str = "populate") -> Dict:
    return {
        "run": run,
        "batch_id": batch_id,
        "mode": mode,  # the job's mode (spec.JOB_MODES): what the counts count
        "status": "ok",  # 'ok' or 'failed'
        "errors": [],  # one line each, never a line's content nor a secret
        "refused": None,  # the line of the AWS refusal that failed the run (spark.refusals), if one did
        "etl_time": None,  # epoch seconds written for the run's events (etl_time='run'), or the earliest
        "objects": [],  # {"key", "bytes", "lines", "error"}
        "counts": empty_counts(mode),
        "timings": {},
        "count_only": False,
    }


def counts_add_up(counts: Dict, mode: str = "populate") -> bool:
    malformed = sum(counts["malformed"].get(r, 0) for r in MALFORMED_REASONS)
    return counts["lines"] == malformed + sum(counts.get(k, 0) for k in MODE_OUTCOMES[mode])


def completeness_problem(report: Dict) -> Optional[str]:
    """Why this run must not be marked done, or None when every item it owes is in the table.

    For a clean or verify report (its "mode"): None when every key of the run was deleted or checked. Missing
    items found by a verify are its finding, not a problem of the report.
    """
    mode = report.get("mode", "populate")
    if report.get("count_only"):
        return "count-only pass: nothing was written"
    if report.get("status") != "ok":
        return "; ".join(report.get("errors") or ["run failed"])
    unread = [o["key"] for o in report.get("objects", []) if o.get("error")]
    if unread:
        return f"unreadable objects: {', '.join(unread[:5])}"
    counts = report["counts"]
    failed, unsettled = MODE_FAILURES[mode]
    if counts.get(failed) or counts.get(unsettled):
        return (f"{counts.get(failed, 0)} {failed.replace('_', ' ')}, "
                f"{counts.get(unsettled, 0)} events {unsettled.replace('_', ' ')}")
    if not counts_add_up(counts, mode):
        return "counts do not add up"
    return None


def report_location(reports: Location, run: str) -> Location:
    """Where the job writes the report of `run` in a batch's reports folder."""
    return reports.child(file_name(run))


def dumps(report: Dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True)


def merge_examples(examples: List[str], more: List[str]) -> List[str]:
    return (examples + more)[:MAX_EXAMPLES]
