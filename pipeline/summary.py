"""What an operator reads: the plan and its cost before a backfill, a progress line during, the summary after.

Each report is returned twice, as console text and as JSON-ready data holding the same figures; the text is
shortened for long archives, the data never is.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from spark import storage
from spark.archive import UNREADABLE_STORAGE_CLASSES, archived_objects, data_objects
from spark.report import OUTCOMES, completeness_problem
from spark.runid import file_name, folder_name
from spark.storage import Location, ObjectInfo

from . import estimate, runs
from .estimate import Prices
from .markers import MarkerStore, utc_now
from .plan import Plan

COLUMNS = ("written", "already_present", "batch_duplicates", "in_run_duplicates", "no_fingerprint", "malformed",
           "expired")
TOTAL_KEYS = ("lines", "malformed", "wcu_consumed", "throttle_retries", *OUTCOMES)
MAX_ROWS = 40  # runs, batches or skipped folders listed on the console; the JSON holds them all
NOT_REPORTED = "no report: its batch did not run, or its job ended before reporting"

ListObjects = Callable[[Location], List[ObjectInfo]]


# --- formatting ---------------------------------------------------------------------------------------------

def count(n: float) -> str:
    return f"{n:,.0f}"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000.0
    raise AssertionError("unreachable")


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "not estimated"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 48 * 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def usd(amount: Optional[float]) -> str:
    if amount is None:
        return "unknown price"
    if 0 < amount < 0.005:
        return "<$0.01"
    return f"${amount:,.2f}"


def grid(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    """Left-aligned first column, right-aligned others."""
    cells = [list(header)] + [list(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    return ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))).rstrip()
            for c in cells]


def _shortened(lines: List[str], what: str) -> List[str]:
    if len(lines) <= MAX_ROWS:
        return lines
    half = MAX_ROWS // 2
    return lines[:half] + [f"  ... {len(lines) - 2 * half} more {what} (all in --output-json)"] + lines[-half:]


def _table_with_total(header: Sequence[str], rows: List[Sequence[str]], total: Sequence[str], what: str
                      ) -> List[str]:
    table = grid(header, rows + [total])
    return [table[0]] + _shortened(table[1:-1], what) + [table[-1]]


def _span(ids: Sequence[str]) -> str:
    return "" if not ids else f" ({ids[0]})" if len(ids) == 1 else f" ({ids[0]} .. {ids[-1]})"


# --- the archive's runs -------------------------------------------------------------------------------------

@dataclass
class RunObjects:
    objects: List[ObjectInfo]  # data objects only
    unreadable: List[str]  # names of objects in GLACIER or DEEP_ARCHIVE that are not restored

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)


def survey_runs(archive: Location, run_ids: Sequence[str], list_objects: Optional[ListObjects] = None
                ) -> Dict[str, RunObjects]:
    """One paginated listing per run; S3 objects in an archive class are checked for a restore, as the job does."""
    client = storage.s3_client() if archive.is_s3 else None
    lister = list_objects or (lambda loc: storage.list_objects(loc, client))
    out = {}
    for run in run_ids:
        folder = archive.child(folder_name(run))
        data = data_objects(lister(folder))
        if folder.is_s3:
            unreadable = archived_objects(folder, data, client)
        else:
            unreadable = [o.name for o in data if o.storage_class in UNREADABLE_STORAGE_CLASSES]
        out[run] = RunObjects(data, unreadable)
    return out


def unreadable_reason(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"unreadable storage class: {shown} (GLACIER or DEEP_ARCHIVE: restore them first)"


# --- before: the dry run ------------------------------------------------------------------------------------

def dry_run(plan: Plan, counted_events: Optional[Dict[str, int]] = None, prices: Optional[Prices] = None,
            emr: Optional[dict] = None, list_objects: Optional[ListObjects] = None) -> Tuple[str, Dict]:
    """Everything up to submitting work, and what it would cost; nothing is written.

    `counted_events` maps run ids to their valid events (--count-events); runs without a count are estimated from
    their bytes. `emr` is the [emr] settings of an EMR runner (None: local runner). Runs holding unreadable
    objects are skipped here and their batches made again without them.
    """
    ctx, info = plan.context, plan.table
    prices = prices or Prices()
    surveyed = survey_runs(ctx.archive, plan.runs_todo, list_objects)
    unreadable = [r for r in plan.runs_todo if surveyed[r].unreadable]
    skipped = list(plan.runs_skipped) + [{"run": r, "reason": unreadable_reason(surveyed[r].unreadable)}
                                         for r in unreadable]
    todo = [r for r in plan.runs_todo if not surveyed[r].unreadable]
    batches = plan.batches
    if unreadable:
        batches = runs.make_batches(todo, ctx.params.batch_size) if todo else []
    counted = counted_events or {}
    per_run = {}
    for run in todo:
        objects = surveyed[run]
        by_count = run in counted
        per_run[run] = {
            "objects": len(objects.objects), "bytes": objects.bytes,
            "events": int(counted[run]) if by_count else estimate.events_from_bytes(
                (o.name, o.size) for o in objects.objects),
            "events_source": estimate.COUNTED if by_count else estimate.FROM_BYTES,
        }
    events = sum(r["events"] for r in per_run.values())
    source = estimate.events_source(sum(1 for r in todo if r in counted), len(todo)) if counted_events is not None \
        else estimate.FROM_BYTES
    billing = info.billing_mode if info else None
    groups = estimate.emr_groups(emr) if emr is not None else None
    est = estimate.estimates(events, source, plan.budget, billing, ctx.params.write_mode, prices, groups,
                             new_cluster=not (emr or {}).get("cluster_id"))
    data = {
        "dry_run": True, "table": ctx.config.table, "region": ctx.config.region, "archive": ctx.archive.uri,
        "since": ctx.since, "billing_mode": billing, "write_capacity": info.write_capacity if info else 0,
        "table_exists": info is not None, "budget_wcu_per_second": plan.budget,
        "write_mode": ctx.params.write_mode, "runner": ctx.params.runner,
        "runs_to_do": todo, "runs_done": plan.runs_done, "runs_skipped": skipped,
        "batches": [{"id": bid, "runs": list(batch)} for bid, batch in batches],
        "objects": sum(r["objects"] for r in per_run.values()), "bytes": sum(r["bytes"] for r in per_run.values()),
        "events": events, "events_source": source, "per_run": per_run, "estimates": est,
        "nothing_to_do": None if todo else nothing_to_do(plan.runs_done, ctx.since, len(unreadable)),
    }
    return "\n".join(_dry_run_lines(data, emr)), data


def _dry_run_lines(d: Dict, emr: Optional[dict]) -> List[str]:
    if not d["table_exists"]:
        mode = "does not exist yet"
    elif d["billing_mode"] == "PROVISIONED":
        mode = f"provisioned, {count(d['write_capacity'])} WCU"
    else:
        mode = "on-demand"
    todo, batches = d["runs_to_do"], d["batches"]
    lines = [
        f"Dry run for DynamoDB table {d['table']} in {d['region']} ({mode}); budget {count(d['budget_wcu_per_second'])}"
        f" WCU/s, write mode {d['write_mode']}, runner {d['runner']}. Nothing was written.",
        f"Runs: {len(todo)} to do in {len(batches)} batches, {len(d['runs_done'])} already done, "
        f"{len(d['runs_skipped'])} skipped; {count(d['objects'])} objects, {human_bytes(d['bytes'])}, "
        f"{count(d['events'])} events ({d['events_source']}).",
    ]
    if not todo:
        lines.append(f"Nothing to do: {d['nothing_to_do']}.")
    else:
        rows = [(r, count(p["objects"]), human_bytes(p["bytes"]), count(p["events"]),
                 "" if p["events_source"] == estimate.COUNTED else "~")
                for r, p in ((r, d["per_run"][r]) for r in todo)]
        total = ("total", count(d["objects"]), human_bytes(d["bytes"]), count(d["events"]), "")
        lines += [""] + _table_with_total(("run to do", "objects", "bytes", "events", ""), rows, total, "runs")
        if d["events_source"] != estimate.COUNTED:
            lines.append("~ estimated from bytes (rough): --count-events counts them")
        lines += ["", f"Batches ({len(batches)}):"] + _shortened(
            [f"  {b['id']}: {plural(len(b['runs']), 'run')}{_span(b['runs'])}" for b in batches], "batches")
    lines += ["", f"Already done: {plural(len(d['runs_done']), 'run')}{_span(d['runs_done'])}."]
    if d["runs_skipped"]:
        lines += [f"Skipped ({len(d['runs_skipped'])}):"] + _shortened(
            [f"  {s['run']}: {s['reason']}" for s in d["runs_skipped"]], "skipped")
    return lines + [""] + _estimate_lines(d["estimates"], emr)


def _estimate_lines(est: Dict, emr: Optional[dict]) -> List[str]:
    m = est["methods"]
    order = ("conditional", "fast", "import")
    header = ["", *(f"write: {k}" + (" *" if k == est["configured_write_mode"] else "") for k in order[:2]),
              "import"]

    def row(label: str, cell: Callable[[str, Dict], str]) -> List[str]:
        return [label] + [cell(k, m[k]) for k in order]

    rows = [
        row("WCU", lambda k, r: count(r["wcu"])),
        row("RCU", lambda k, r: count(r["rcu"])),
        row(f"time at {count(est['budget_wcu_per_second'])} WCU/s",
            lambda k, r: duration(r["seconds"]) if k != "import" else "not estimated"),
        row("DynamoDB on-demand", lambda k, r: usd(r["on_demand_usd"]) if k != "import" else "-"),
        row("DynamoDB provisioned", lambda k, r: usd(r["provisioned_usd"]) if k != "import" else "-"),
        row("import from S3", lambda k, r: f"{usd(r['import_usd'])} ({r['gb']:,.3g} GB)" if k == "import" else "-"),
    ]
    if emr is not None:
        rows.append(row("EMR", lambda k, r: f"{usd(r['emr']['usd'])} ({r['emr']['hours']:,.2f} h)"))
    basis = {"PROVISIONED": "provisioned table", "PAY_PER_REQUEST": "on-demand table"}.get(est["billing_mode"],
                                                                                          "on-demand prices")
    rows.append(row(f"total ({basis}{', with EMR' if emr is not None else ''})", lambda k, r: usd(r["total_usd"])))
    lines = [f"Estimates for {count(est['events'])} events ({est['events_source']}), write method vs import method:"]
    lines += grid(header, rows)
    lines.append(f"* configured write mode. EMR: {_cluster(emr)}." if emr is not None
                 else "* configured write mode. EMR: not used (local runner).")
    notes = list(est["notes"])
    for k in order:
        for note in m[k].get("emr", {}).get("notes", []):
            if note not in notes:
                notes.append(note)
    return lines + [f"  - {n}" for n in notes]


def _cluster(emr: dict) -> str:
    groups = estimate.emr_groups(emr)
    shape = " + ".join(f"{g.count} {g.role} {g.instance_type}{' SPOT' if g.market == 'SPOT' else ''}"
                       for g in groups)
    return f"existing cluster {emr['cluster_id']} ({shape})" if emr.get("cluster_id") else f"new cluster of {shape}"


# --- during: one progress line ------------------------------------------------------------------------------

def progress_line(done_runs: int, total_runs: int, written: int, rate: Optional[float]) -> str:
    """The console's steady progress report, and a task's status message in luigid."""
    share = 100.0 * done_runs / total_runs if total_runs else 100.0
    now = f", {count(rate)} items/s now" if rate is not None else ""
    return f"{done_runs} of {total_runs} runs done ({share:.0f}%), {count(written)} items written{now}"


# --- after: the summary -------------------------------------------------------------------------------------

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


def why_left(store: MarkerStore, batches: Sequence[Tuple[str, Sequence[str]]], left: Sequence[str]) -> Dict[str, str]:
    """Why each run is still unmarked, from its batch's report: one listing per batch, one read per report."""
    batch_of = {run: bid for bid, batch in batches for run in batch}
    reasons = {run: NOT_REPORTED for run in left}
    for bid in sorted({batch_of[r] for r in left if r in batch_of}):
        present = {o.name for o in storage.list_objects(store.reports(bid), store.client, recursive=False)}
        for run in (r for r in left if batch_of.get(r) == bid and file_name(r) in present):
            report = store.read_json(store.report(bid, run))
            if report is not None:
                reasons[run] = completeness_problem(report) or "complete, but its batch failed before marking it"
    return reasons


def nothing_to_do(done: Sequence[str], since: Optional[str], unreadable: int = 0) -> str:
    """Why there is no run to do."""
    if unreadable:
        return f"{plural(unreadable, 'run')} left to do, all in an unreadable storage class"
    if done:
        return "every run at or after --since is already done" if since else "every run is already done"
    return "no run at or after --since" if since else "the archive holds no run"


def after_run(plan: Plan, started: float) -> Tuple[str, Dict]:
    """Per-run counts of the runs this invocation did, totals, what is left and why, warnings, time and WCU."""
    ctx = plan.context
    store = ctx.store
    done_now = store.done_runs()
    per_run, report_warnings = {}, []
    for run in plan.runs_todo:
        if run in done_now:
            report = store.read_marker(run)["report"]
            per_run[run] = run_counts(report)
            report_warnings += [f"run {run}: {w}" for w in report.get("warnings", [])]
    left = [r for r in plan.runs_todo if r not in done_now]
    reasons = why_left(store, plan.batches, left) if left else {}
    totals = {k: sum(r[k] for r in per_run.values()) for k in TOTAL_KEYS}
    totals["duplicates"] = totals["in_run_duplicates"] + totals["batch_duplicates"]
    elapsed = round(time.time() - started, 1)
    table = plan.table
    warnings = []
    if table is not None and not table.ttl_enabled:
        warnings.append(f"TTL is not enabled on 'ttl' of table '{table.name}': manifest items will never expire")
    if left:
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
        "per_run": per_run, "totals": totals, "wcu_used": totals["wcu_consumed"],
        "wcu_per_second": round(totals["wcu_consumed"] / elapsed, 1) if elapsed > 0 else None,
        "warnings": warnings,
    }
    return "\n".join(_after_lines(data)), data


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
            lines += [""] + _table_with_total(("run",) + COLUMNS, rows, total, "runs")
        if d["runs_failed"]:
            lines += ["", f"Not done ({len(d['runs_failed'])}):"] + _shortened(
                [f"  {f['run']}: {f['reason']}" for f in d["runs_failed"]], "runs")
        if d["runs_without_writes"]:
            lines += ["", "Done without writing:"] + _shortened(
                [f"  {f['run']}: {f['reason']}" for f in d["runs_without_writes"]], "runs")
    if d["runs_skipped"]:
        lines += ["", f"Skipped ({len(d['runs_skipped'])}):"] + _shortened(
            [f"  {s['run']}: {s['reason']}" for s in d["runs_skipped"]], "skipped")
    return lines + [f"warning: {w}" for w in d["warnings"]]
