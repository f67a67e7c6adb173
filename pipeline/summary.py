"""What an operator reads: the dry-run plan before, the per-run summary after (console text and JSON)."""
from __future__ import annotations

import time
from typing import Dict, List, Tuple

from spark import storage
from spark.report import OUTCOMES

from .markers import utc_now
from .plan import Plan

COLUMNS = ("written", "already_present", "batch_duplicates", "in_run_duplicates", "no_fingerprint", "malformed",
           "expired")


def run_counts(report: Dict) -> Dict[str, int]:
    counts = report["counts"]
    row = {k: counts.get(k, 0) for k in OUTCOMES}
    row["lines"] = counts.get("lines", 0)
    row["malformed"] = sum(counts.get("malformed", {}).values())
    row["wcu_consumed"] = counts.get("wcu_consumed", 0)
    row["throttle_retries"] = counts.get("throttle_retries", 0)
    return row


def _table(rows: List[Tuple[str, Dict[str, int]]], columns) -> List[str]:
    header = ["run"] + list(columns)
    cells = [[name] + [str(r.get(c, 0)) for c in columns] for name, r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    fmt = lambda values: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))  # noqa: E731
    return [fmt(header)] + [fmt(c) for c in cells]


def after_run(plan: Plan, started: float) -> Tuple[str, Dict]:
    """Per-run counts of the runs this invocation did, totals and what is left."""
    store = plan.context.store
    done_now = store.done_runs()
    per_run, left = {}, []
    for run in plan.runs_todo:
        if run in done_now:
            per_run[run] = run_counts(store.read_marker(run)["report"])
        else:
            left.append(run)
    totals = {k: sum(r[k] for r in per_run.values()) for k in ("lines", "malformed", "wcu_consumed",
                                                                "throttle_retries", *OUTCOMES)}
    warnings = [] if plan.table.ttl_enabled else [f"TTL is not enabled on 'ttl' of table '{plan.table.name}'"]
    data = {
        "table": plan.table.name, "region": plan.table.region, "archive": plan.context.archive.uri,
        "since": plan.context.since, "finished_at": utc_now(), "elapsed_seconds": round(time.time() - started, 1),
        "runs_done_now": sorted(per_run), "runs_already_done": plan.runs_done, "runs_left": left,
        "runs_skipped": plan.runs_skipped, "per_run": per_run, "totals": totals, "warnings": warnings,
    }
    if not plan.runs_todo:
        why = ("every run at or after --since is already done" if plan.runs_done
               else "no run at or after --since" if plan.context.since else "the archive holds no run")
        lines = [f"Nothing to do: {why} ({len(plan.runs_done)} runs already done, nothing written)."]
    else:
        lines = [f"Populated {plan.table.name}: {len(per_run)} runs done now, {len(plan.runs_done)} already done, "
                 f"{len(left)} left; {totals['written']} items written, {totals['wcu_consumed']} WCU used, "
                 f"{data['elapsed_seconds']} s."]
        lines += _table(sorted(per_run.items()), COLUMNS)
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines), data


def dry_run(plan: Plan) -> Tuple[str, Dict]:
    """Everything up to submitting work; nothing is written."""
    ctx = plan.context
    objects = {}
    for run in plan.runs_todo:
        listed = storage.list_objects(ctx.archive.child(f"run={run}"))
        data_objects = [o for o in listed if o.size > 0 and not o.name.endswith("_$folder$")
                        and o.name.rsplit("/", 1)[-1] != "_SUCCESS"]
        objects[run] = {"objects": len(data_objects), "bytes": sum(o.size for o in data_objects)}
    data = {
        "table": plan.table.name, "region": plan.table.region, "billing_mode": plan.table.billing_mode,
        "write_capacity": plan.table.write_capacity, "budget_wcu_per_second": plan.budget,
        "runs_to_do": plan.runs_todo, "runs_done": plan.runs_done, "runs_skipped": plan.runs_skipped,
        "batches": [{"id": bid, "runs": runs} for bid, runs in plan.batches],
        "objects": sum(o["objects"] for o in objects.values()), "bytes": sum(o["bytes"] for o in objects.values()),
        "per_run": objects,
    }
    lines = [f"Dry run for {plan.table.name} ({plan.table.billing_mode}, budget {plan.budget:.0f} WCU/s): "
             f"{len(plan.runs_todo)} runs to do in {len(plan.batches)} batches, {len(plan.runs_done)} done, "
             f"{len(plan.runs_skipped)} skipped; {data['objects']} objects, {data['bytes']} bytes. Nothing written."]
    lines += _table(sorted(objects.items()), ("objects", "bytes"))
    lines += [f"skipped {s['run']}: {s['reason']}" for s in plan.runs_skipped]
    return "\n".join(lines), data
