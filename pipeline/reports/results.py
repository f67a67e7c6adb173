"""What a finished (or failed) backfill reads back for its summary: the reports of the runs marked now, and why
each run left is not marked. The summary itself (summary.py) only formats what this returns."""
from __future__ import annotations

from typing import Dict, Tuple

from pipeline.orchestration.lifecycle import read_reports
from pipeline.orchestration.plan import Plan
from spark.report import completeness_problem

from .summary import NOT_REPORTED, NOT_STARTED


def collect(plan: Plan, refusal: str = "") -> Tuple[Dict[str, Dict], Dict[str, str]]:
    """(report of each run to do that is now marked, reason of each that is not): one listing of the markers, a
    read per run marked, and one listing per batch with a run left. After an AWS `refusal` stopped the backfill,
    a run without a report was not started."""
    store = plan.context.store
    marked = store.done_runs()
    done_now = {run: store.read_marker(run)["report"] for run in plan.runs_todo if run in marked}
    reasons = {}
    for batch in plan.batches:
        left = [r for r in batch.runs if r not in marked]
        if not left:
            continue
        for run, report in read_reports(store, store.reports(batch.id), left).items():
            if report is None:
                reasons[run] = NOT_STARTED if refusal else NOT_REPORTED
            else:
                reasons[run] = completeness_problem(report) or "complete, but its batch failed before marking it"
    return done_now, reasons
