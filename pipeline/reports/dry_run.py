"""The dry run: the plan and what it would cost, before anything is submitted or written.

Returned twice, as console text and as JSON-ready data holding the same figures; the text is shortened for long
archives, the data never is.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from pipeline.orchestration.plan import Plan
from pipeline.rules import batches
from pipeline.rules.text import count, duration, grid, human_bytes, plural, shortened, span, table_with_total, usd

from . import estimate
from .estimate import Prices
from .summary import nothing_to_do


def dry_run(plan: Plan, counted_events: Optional[Dict[str, int]] = None, prices: Optional[Prices] = None,
            emr: Optional[dict] = None) -> Tuple[str, Dict]:
    """Everything up to submitting work, and what it would cost; nothing is written.

    `counted_events` maps run ids to their valid events (--count-events); runs without a count are estimated from
    their bytes. `emr` is the [emr] settings of an EMR runner (None: local runner).
    """
    ctx, info = plan.context, plan.table
    prices = prices or Prices()
    todo = plan.runs_todo
    counted = counted_events or {}
    per_run = {}
    for run in todo:
        objects = plan.objects[run]
        by_count = run in counted
        per_run[run] = {
            "objects": len(objects.objects), "bytes": objects.bytes,
            "events": int(counted[run]) if by_count else objects.events,
            "events_source": estimate.COUNTED if by_count else estimate.FROM_BYTES,
        }
    events = sum(r["events"] for r in per_run.values())
    source = estimate.events_source(sum(1 for r in todo if r in counted), len(todo)) if counted_events is not None \
        else estimate.FROM_BYTES
    billing = info.billing_mode if info else None
    groups = estimate.emr_groups(emr) if emr is not None else None
    est = estimate.estimates(events, source, plan.budget, billing, ctx.params.write_mode, prices, groups,
                             new_cluster=not (emr or {}).get("cluster_id"))
    start = batches.start_seconds(ctx.params.runner)
    batch_rows = [{"id": b.id, "runs": list(b.runs), "events": sum(per_run[r]["events"] for r in b.runs),
                   "start_seconds": start} for b in plan.batches]
    budget = plan.batch_budget
    largest = max((b["events"] for b in batch_rows), default=0)
    data = {
        "dry_run": True, "table": ctx.config.table, "region": ctx.config.region, "archive": ctx.archive.uri,
        "since": ctx.since, "billing_mode": billing, "write_capacity": info.write_capacity if info else 0,
        "table_exists": info is not None, "budget_wcu_per_second": plan.budget,
        "write_mode": ctx.params.write_mode, "runner": ctx.params.runner,
        "runs_to_do": todo, "runs_done": plan.runs_done, "runs_skipped": plan.runs_skipped,
        "batches": batch_rows, "batch_minutes": ctx.params.batch_minutes, "batch_size": ctx.params.batch_size,
        "start_seconds_total": start * len(batch_rows),
        "kill_loses_seconds": round(largest / budget, 1) if budget > 0 and batch_rows else None,
        "objects": sum(r["objects"] for r in per_run.values()), "bytes": sum(r["bytes"] for r in per_run.values()),
        "events": events, "events_source": source, "per_run": per_run, "estimates": est,
        "nothing_to_do": None if todo else nothing_to_do(plan.runs_done, ctx.since, len(plan.runs_unreadable)),
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
        lines += [""] + table_with_total(("run to do", "objects", "bytes", "events", ""), rows, total, "runs")
        if d["events_source"] != estimate.COUNTED:
            lines.append("~ estimated from bytes (rough): --count-events counts them")
        lines += ["", f"Batches ({len(batches)}, up to {d['batch_minutes']:g} min of writing or "
                      f"{d['batch_size']:,} runs each; each starts in ~{duration(batches[0]['start_seconds'])}, "
                      f"{duration(d['start_seconds_total'])} in all):"] + shortened(
            [f"  {b['id']}: {plural(len(b['runs']), 'run')}{span(b['runs'])}, ~{count(b['events'])} events"
             for b in batches], "batches")
        if d["kill_loses_seconds"] is not None:
            lines.append(f"A kill loses at most one batch: ~{duration(d['kill_loses_seconds'])} of writing, "
                         "done again on resume.")
    lines += ["", f"Already done: {plural(len(d['runs_done']), 'run')}{span(d['runs_done'])}."]
    if d["runs_skipped"]:
        lines += [f"Skipped ({len(d['runs_skipped'])}):"] + shortened(
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
