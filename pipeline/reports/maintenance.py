"""What CleanManifest and VerifyManifest print and write as JSON: formatted from the records passed in.

`clean_records`/`verify_records` read them (one read per selected run); the rest only formats and judges.
"""
from __future__ import annotations

from typing import Dict, Optional, Set, Tuple

from pipeline.orchestration.maintenance_plan import MaintenancePlan
from pipeline.rules.errors import PipelineError
from pipeline.rules.text import shortened, span
from pipeline.stores import records
from pipeline.stores.markers import utc_now

from .summary import plural

CLEAN_COUNTS = ("deleted", "not_present", "kept_older", "kept_newer", "wcu_consumed")
VERIFY_COUNTS = ("found", "missing", "later_etl_time", "not_sampled", "expired", "rcu_consumed")


def clean_records(plan: MaintenancePlan) -> Dict[str, dict]:
    """Each selected run's clean record ({} when it has none)."""
    cleaned = records.cleaned_store(plan.context.store)
    return {run: cleaned.read_json(cleaned.marker(run)) or {} for run in plan.selected}


def clean_report(plan: MaintenancePlan, found: Dict[str, dict]) -> Tuple[str, dict]:
    rows = {}
    for run in plan.selected:
        record = found.get(run, {})
        counts = record.get("report", {}).get("counts", {})
        rows[run] = {k: counts.get(k, 0) for k in CLEAN_COUNTS}
        rows[run]["cleaned_at"] = record.get("marked_at")
    table_name = plan.context.config.table
    if not plan.selected:
        text = f"Nothing to clean in {table_name}: no run of the archive is in the range given"
    else:
        text = "\n".join(
            [f"Cleaned table {table_name}: {plural(len(plan.selected) - len(plan.runs_done), 'run')} cleaned now, "
             f"{len(plan.runs_done)} already clean"]
            + [f"  run={run}: {r['deleted']:,} deleted, {r['not_present']:,} not present, {r['kept_older']:,} "
               f"kept (older etlTime), {r['kept_newer']:,} kept (newer etlTime)" for run, r in rows.items()]
            + ["Their populate markers are removed: PopulateManifest writes these runs again. Until then, later "
               "runs' duplicates of their events have no item either (VerifyManifest shows them)."])
    return text, {"table": table_name, "finished_at": utc_now(), "runs": rows, "already_clean": plan.runs_done}


def verify_records(plan: MaintenancePlan, sample: int, seed: int, resume: bool) -> Tuple[Dict[str, dict], Set[str]]:
    """Each selected run's latest verify report, and the runs whose earlier verification still holds (--resume)."""
    store = plan.context.store
    found = {run: records.verification(store, run) for run in plan.selected}
    held = {run for run in plan.selected if resume and records.passed_since_marked(store, run, sample, seed)}
    return found, held


def verify_report(plan: MaintenancePlan, found: Dict[str, dict], held: Set[str], sample: int, seed: int
                  ) -> Tuple[str, dict, Optional[str]]:
    """(text, data, the error to fail with when items are missing or a run has no verification)."""
    batch_ids = {b.id for b in plan.batches}
    rows, stale = {}, []
    for run in plan.selected:
        report = found.get(run, {})
        if report.get("batch_id") not in batch_ids and run not in held:
            stale.append(run)
            continue
        counts = report.get("counts", {})
        rows[run] = {k: counts.get(k, 0) for k in VERIFY_COUNTS}
        rows[run]["examples"] = report.get("missing_examples", [])
    if stale:  # a batch reported success without recording its runs: never take that as a pass
        raise PipelineError(f"{len(stale)} runs have no verification from this run: {', '.join(stale[:10])}")
    table_name = plan.context.config.table
    bad = {run: r for run, r in rows.items() if r["missing"] or r["later_etl_time"]}
    checked = sum(r["found"] + r["missing"] + r["later_etl_time"] for r in rows.values())
    how = f" (a sample of {sample} keys per run, seed {seed})" if sample else ""
    lines = [f"Verified table {table_name}: {plural(len(rows), 'run')}, {plural(checked, 'item')} checked{how}, "
             + (f"items missing in {plural(len(bad), 'run')}" if bad else "none missing")]
    for run, r in rows.items():
        extra = f", {r['later_etl_time']:,} with a later etlTime" if r["later_etl_time"] else ""
        lines.append(f"  run={run}: {r['found']:,} found, {r['missing']:,} missing{extra}")
    if not rows:
        lines = [f"Nothing to verify in {table_name}: no marked run in the range given"]
    data = {"table": table_name, "finished_at": utc_now(), "sample": sample, "sample_seed": seed, "runs": rows}
    error = None
    if bad:
        folder = records.verified_store(plan.context.store).folder.uri
        error = (f"manifest {table_name}: items missing in {len(bad)} of {len(rows)} runs: "
                 + "; ".join(f"run {run}: {r['missing']} missing"
                             + (f", {r['later_etl_time']} with a later etlTime" if r["later_etl_time"] else "")
                             for run, r in bad.items())
                 + f" (up to 10 example keys per run in {folder}/run=<id>.json)")
    return "\n".join(lines), data, error


def maintenance_dry_run(plan: MaintenancePlan) -> Tuple[str, dict]:
    """CleanManifest/VerifyManifest --dry-run: the runs selected and their batches; nothing is read or written
    beyond planning."""
    ctx, verb = plan.context, plan.kind
    unit = "RCU" if verb == "verify" else "WCU"
    batches = [{"id": b.id, "runs": list(b.runs)} for b in plan.batches]
    todo = [run for b in plan.batches for run in b.runs]
    lines = [f"Dry run of a {verb} of DynamoDB table {ctx.config.table} in {ctx.config.region}: "
             f"{plural(len(plan.selected), 'run')} selected, {plural(len(todo), 'run')} to {verb} in "
             f"{len(batches):,} batch{'' if len(batches) == 1 else 'es'} at {plan.budget:,.0f} {unit}/s. "
             "Nothing was written."]
    if plan.runs_done:
        lines.append(f"Already clean: {plural(len(plan.runs_done), 'run')}{span(plan.runs_done)}.")
    lines += shortened([f"  {b['id']}: {plural(len(b['runs']), 'run')}{span(b['runs'])}" for b in batches],
                       "batches")
    data = {"dry_run": True, "command": verb, "table": ctx.config.table, "region": ctx.config.region,
            "archive": ctx.archive.uri, "runs_selected": plan.selected, "runs_to_do": todo,
            "runs_done": plan.runs_done, "batches": batches, "budget_per_second": plan.budget, "unit": unit}
    return "\n".join(lines), data
