"""The summary after a backfill: what each run came to, totals, what is left and why.

Returned twice, as console text and as JSON-ready data holding the same figures; the text is shortened for long
archives, the data never is.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

from pipeline.orchestration.plan import Plan
from pipeline.rules.text import count, duration, plural, shortened, span, table_with_total
from pipeline.stores.markers import utc_now
from spark.report import OUTCOMES

COLUMNS = ("written", "already_present", "batch_duplicates", "in_run_duplicates", "no_fingerprint", "malformed",
           "expired")
TOTAL_KEYS = ("lines", "malformed", "wcu_consumed", "throttle_retries", *OUTCOMES)
NOT_REPORTED = "no report: its batch did not run, or its job ended before reporting"
NOT_STARTED = "not started: stopped at AWS's refusal (the command's last line), which every batch would meet"
REFUSED_HERE = "AWS refused a request (the command's last line says which and to whom)"


def run_counts(report: Dict) -> Dict[str, int]:
    counts = report["counts"]
    row = {k: counts.get(k, 0) for k in OUTCOMES}
    row["lines"] = counts.get("lines", 0)
    row["malformed"] = sum(counts.get("malformed", {}).values())
    row["wcu_consumed"] = counts.get("wcu_consumed", 0)
    row["throttle_retries"] = counts.get("throttle_retries", 0)
    return row


def why_nothing_written(row: Dict[str, int]) -> str:
    """A done run that wrote no item: where its lines went."""
    if not row.get("lines"):
        return "the run holds no events"
    parts = [f"{count(row[k])} {k.replace('_', ' ')}" for k in COLUMNS[1:] if row.get(k)]
    return "every line accounted for without a write: " + ", ".join(parts)


def nothing_to_do(done: Sequence[str], since: Optional[str], unreadable: int = 0) -> str:
    """Why there is no run to do."""
    if unreadable:
        return f"{plural(unreadable, 'run')} left to do, all in an unreadable storage class"
    if done:
        return "every run at or after --since is already done" if since else "every run is already done"
    return "no run at or after --since" if since else "the archive holds no run"


def after_run(plan: Plan, started: float, done_now: Dict[str, Dict], reasons: Dict[str, str],
              now: Optional[float] = None, stopped: str = "") -> Tuple[str, Dict]:
    """Per-run counts of the runs this invocation did (`done_now`: their reports), totals, what is left and why
    (`reasons`), warnings, time and WCU; built from what is passed in (results.py reads it). `stopped`: the line
    of the AWS refusal that kept later batches from starting."""
    ctx = plan.context
    per_run, report_warnings = {}, []
    for run in plan.runs_todo:
        if run in done_now:
            report = done_now[run]
            per_run[run] = run_counts(report)
            report_warnings += [f"run {run}: {w}" for w in report.get("warnings", [])]
    left = [r for r in plan.runs_todo if r not in done_now]
    reasons = {r: reasons.get(r, NOT_REPORTED) for r in left}
    totals = {k: sum(r[k] for r in per_run.values()) for k in TOTAL_KEYS}
    totals["duplicates"] = totals["in_run_duplicates"] + totals["batch_duplicates"]
    elapsed = round((time.time() if now is None else now) - started, 1)
    table = plan.table
    warnings = []
    if table is not None and not table.ttl_enabled:
        warnings.append(f"TTL is not enabled on 'ttl' of table '{table.name}': manifest items will never expire")
    not_started = [r for r in left if reasons[r] == NOT_STARTED]
    if stopped:
        warnings.append(f"stopped at AWS's refusal: {plural(len(not_started), 'run')} not started; run the same "
                        "command again once it is fixed")
    elif left:
        warnings.append(f"{plural(len(left), 'run')} not marked: run the same command again to resume")
    warnings += report_warnings
    idle = [{"run": r, "reason": why_nothing_written(per_run[r])} for r in sorted(per_run) if not per_run[r]["written"]]
    nothing = None if plan.runs_todo else nothing_to_do(plan.runs_done, ctx.since)
    data = {
        "table": ctx.config.table, "region": ctx.config.region, "archive": ctx.archive.uri, "since": ctx.since,
        "write_mode": ctx.params.write_mode, "budget_wcu_per_second": plan.budget,
        "finished_at": utc_now(), "elapsed_seconds": elapsed,
        "runs_done_now": sorted(per_run), "runs_already_done": plan.runs_done, "runs_left": left,
        "runs_failed": [{"run": r, "reason": reasons[r]} for r in left], "runs_skipped": plan.runs_skipped,
        "runs_without_writes": idle, "nothing_to_do": nothing,
        "stopped_by_refusal": stopped or None, "runs_not_started": not_started,
        "per_run": per_run, "totals": totals, "wcu_used": totals["wcu_consumed"],
        "wcu_per_second": round(totals["wcu_consumed"] / elapsed, 1) if elapsed > 0 else None,
        "warnings": warnings,
    }
    return "\n".join(_after_lines(data)), data


def _not_done(failed: List[Dict[str, str]], refusal: Optional[str]) -> List[str]:
    """A line per reason, for all its runs: a refusal shared by a batch's runs is said once (and in full only as
    the command's last line)."""
    by_reason: Dict[str, List[str]] = {}
    for f in failed:
        by_reason.setdefault(REFUSED_HERE if refusal and f["reason"] == refusal else f["reason"], []).append(f["run"])
    return shortened([f"  {runs[0]}: {reason}" if len(runs) == 1 else
                      f"  {plural(len(runs), 'run')}{span(runs)}: {reason}" for reason, runs in by_reason.items()],
                     "reasons")


def _after_lines(d: Dict) -> List[str]:
    if d["nothing_to_do"]:
        lines = [f"Nothing to do for {d['table']}: {d['nothing_to_do']} ({plural(len(d['runs_already_done']), 'run')}"
                 f" already done, {len(d['runs_skipped'])} skipped); nothing was written."]
    else:
        t = d["totals"]
        rate = f" (average {count(d['wcu_per_second'])} WCU/s)" if d["wcu_per_second"] is not None else ""
        lines = [f"Populated {d['table']}: {plural(len(d['runs_done_now']), 'run')} done now, "
                 f"{len(d['runs_already_done'])} already done, {len(d['runs_left'])} left; "
                 f"{count(t['written'])} items written, {count(d['wcu_used'])} WCU used{rate}, "
                 f"{duration(d['elapsed_seconds'])}."]
        if d["per_run"]:
            rows = [(r,) + tuple(count(p[c]) for c in COLUMNS) for r, p in sorted(d["per_run"].items())]
            total = ("total",) + tuple(count(t[c]) for c in COLUMNS)
            lines += [""] + table_with_total(("run",) + COLUMNS, rows, total, "runs")
        if d["runs_failed"]:
            lines += ["", f"Not done ({len(d['runs_failed'])}):"] + _not_done(d["runs_failed"],
                                                                              d["stopped_by_refusal"])
        if d["runs_without_writes"]:
            lines += ["", "Done without writing:"] + shortened(
                [f"  {f['run']}: {f['reason']}" for f in d["runs_without_writes"]], "runs")
    if d["runs_skipped"]:
        lines += ["", f"Skipped ({len(d['runs_skipped'])}):"] + shortened(
            [f"  {s['run']}: {s['reason']}" for s in d["runs_skipped"]], "skipped")
    return lines + [f"warning: {w}" for w in d["warnings"]]
