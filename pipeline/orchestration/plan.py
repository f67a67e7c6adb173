"""The populate plan: the checked table and budget, the runs to do from one listing, and their batches."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from pipeline.rules import batches
from pipeline.rules.batches import Batch
from pipeline.rules.errors import PipelineError
from pipeline.stores import listing, table
from spark import storage

from . import importing
from .context import Context

log = logging.getLogger("manifest.plan")


@dataclass
class Plan:
    context: Context
    table: Optional[table.TableInfo]
    budget: float  # WCU/s for the whole backfill
    runs_in_archive: int = 0
    runs_done: List[str] = field(default_factory=list)
    runs_todo: List[str] = field(default_factory=list)
    runs_skipped: List[Dict[str, str]] = field(default_factory=list)
    runs_unreadable: List[str] = field(default_factory=list)  # dry run: in GLACIER, not restored (skipped)
    batches: List[Batch] = field(default_factory=list)
    objects: Dict[str, listing.RunObjects] = field(default_factory=dict)  # of the runs to do

    @property
    def batch_budget(self) -> float:
        """WCU/s one batch may use: the budget over the batches that may run at once (import: one job)."""
        if self.context.params.method == "import":
            return self.budget
        return self.budget / max(1, self.context.params.parallel_batches)

    @property
    def events_todo(self) -> int:
        return sum(b.events for b in self.batches)

    def outcome(self) -> str:
        """One line for an operator: what the archive holds and what this backfill will do."""
        return (f"{self.runs_in_archive:,} runs in the archive: {len(self.runs_todo):,} to do, "
                f"{len(self.runs_done):,} done, {len(self.runs_skipped):,} skipped; "
                f"{len(self.batches):,} batch{'' if len(self.batches) == 1 else 'es'} at {self.budget:,.0f} WCU/s")


def check_archive(ctx: Context, s3) -> None:
    if not storage.exists(ctx.archive, s3):
        origin = f" (from {ctx.archive_origin})" if ctx.archive_origin else ""
        raise PipelineError(f"enriched archive {ctx.archive.uri}{origin} does not exist or is empty")


def make_plan(ctx: Context, dynamodb=None, s3=None) -> Plan:
    """The table (checked or created), the budget, the runs to do from one listing, and their batches."""
    p = ctx.params
    started = time.monotonic()
    s3 = s3 or (storage.s3_client(fail_fast=True) if ctx.archive.is_s3 else None)
    check_archive(ctx, s3)
    dynamodb = dynamodb or ctx.config.dynamodb_client()
    if p.method == "import":  # the import creates the table: it must not exist (checked below, with the runs)
        info = table.describe_table(dynamodb, ctx.config.table, ctx.config.region)
        budget = float(p.on_demand_capacity)
    elif p.dry_run and p.create_table:  # a dry run writes nothing: a table it would create is a new on-demand one
        info = table.describe_table(dynamodb, ctx.config.table, ctx.config.region)
        budget = (table.write_budget(info, p.max_write_capacity, p.capacity_fraction, p.on_demand_capacity) if info
                  else float(p.max_write_capacity or p.on_demand_capacity))
    else:
        info = table.ensure_table(dynamodb, ctx.config.table, ctx.config.region, p.create_table)
        budget = table.write_budget(info, p.max_write_capacity, p.capacity_fraction, p.on_demand_capacity)
    all_runs, skipped = listing.enumerate_runs(ctx.archive, s3)
    in_scope = [r for r in all_runs if ctx.since is None or r >= ctx.since]
    skipped += [{"run": r, "reason": f"before --since {ctx.since}"} for r in all_runs[:len(all_runs) - len(in_scope)]]
    done = ctx.store.done_runs()
    todo = [r for r in in_scope if r not in done]
    objects = listing.survey_runs(ctx.archive, todo, s3, check_restores=p.dry_run)
    unreadable = [r for r in todo if objects[r].unreadable]
    if unreadable:  # the dry run says so and plans without them; a real run lets the job name the objects
        skipped += [{"run": r, "reason": listing.unreadable_reason(objects[r].unreadable)} for r in unreadable]
        todo = [r for r in todo if not objects[r].unreadable]
    plan = Plan(ctx, info, budget, len(all_runs), sorted(done & set(in_scope)), todo, skipped, unreadable,
                objects=objects)
    events = {r: objects[r].events for r in todo}
    if p.method == "import" and todo:  # one job over every run to do: keys settle across all of them
        ident = importing.import_id(ctx.backfill_id, todo)
        importing.check_import_plan(ctx.store, info, ctx.config.table, ctx.config.region, ident)
        plan.batches = [Batch(tuple(todo), sum(events.values()), ident)]
    else:
        plan.batches = batches.by_work(todo, events, plan.batch_budget, p.batch_minutes, p.batch_size)
    log.info("%s (planned in %.2f s)", plan.outcome(), time.monotonic() - started)
    return plan
