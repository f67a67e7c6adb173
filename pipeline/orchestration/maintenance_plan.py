"""Which runs a CleanManifest or VerifyManifest acts on, in which batches, at what budget (no Luigi here).

Batches are `clean-<stamp>-<runs>` and `verify-<stamp>-<runs>`, stamped per invocation: an EMR step of an earlier
clean or verify is never adopted as the proof of a new one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, List, Optional

from pipeline.rules import batches, runs
from pipeline.rules.batches import Batch
from pipeline.rules.errors import PipelineError
from pipeline.stores import listing, records, table
from spark import storage

from .context import Context
from .plan import check_archive


@dataclass
class MaintenancePlan:
    context: Context
    kind: str  # "clean" or "verify"
    selected: List[str]
    budget: float  # WCU/s (clean) or RCU/s (verify) for the whole command
    batches: List[Batch] = field(default_factory=list)
    runs_done: List[str] = field(default_factory=list)  # clean: selected runs already cleaned
    events_todo = 0  # reads and deletes are not sized in events: no time-left estimate

    @property
    def batch_budget(self) -> float:
        return self.budget / max(1, self.context.params.parallel_batches)

    def outcome(self) -> str:
        unit = "RCU" if self.kind == "verify" else "WCU"
        already = f", {len(self.runs_done):,} already cleaned" if self.kind == "clean" else ""
        return (f"{len(self.selected):,} runs selected to {self.kind}{already}; {len(self.batches):,} "
                f"batch{'' if len(self.batches) == 1 else 'es'} at {self.budget:,.0f} {unit}/s")


def read_budget(client, info: table.TableInfo, requested: float, fraction: float, on_demand_cap: float) -> float:
    """RCU/s for a verify: what was asked, else a share of provisioned RCU, else the on-demand cap."""
    if requested < 0:
        raise PipelineError(f"--max-read-capacity must be positive, not {requested}")
    if requested > 0:
        return float(requested)
    if info.billing_mode == "PAY_PER_REQUEST":
        return float(on_demand_cap)
    rcu = int(client.describe_table(TableName=info.name)["Table"].get("ProvisionedThroughput", {})
              .get("ReadCapacityUnits") or 0)
    if rcu <= 0:
        raise PipelineError(f"table '{info.name}' reports no provisioned read capacity: pass --max-read-capacity")
    return max(1.0, rcu * fraction)


def stamp(now: Optional[datetime] = None) -> str:
    """This invocation's part of its batch ids."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S")


@dataclass(frozen=True)
class Selection:
    """What picks a maintenance command's runs, checked before any AWS call."""

    kind: str  # "clean" or "verify"
    runs: str = ""  # --runs
    until: str = ""  # --until
    max_read_capacity: float = 0.0  # verify
    sample: int = 0  # verify


def check_selection(ctx: Context, sel: Selection) -> tuple:
    given, until = runs.check_selection(sel.runs, ctx.since, sel.until)
    if sel.kind == "clean" and not given and not ctx.since and until is None:
        raise PipelineError("CleanManifest needs --runs, or --since and/or --until: it never cleans every run "
                            "by default")
    if sel.kind == "verify" and sel.sample < 0:
        raise PipelineError(f"--sample must be 0 (every key) or more, not {sel.sample}")
    return given, until


def planner(sel: Selection, invoked: Callable[[], str] = stamp) -> Callable[[Context], MaintenancePlan]:
    """The plan maker for one command: parameters and configs first (no AWS call), then the table, the
    archive's runs and the selection."""

    def make(ctx: Context) -> MaintenancePlan:
        given, until = check_selection(ctx, sel)
        p = ctx.params
        s3 = storage.s3_client(fail_fast=True) if ctx.archive.is_s3 else None
        check_archive(ctx, s3)
        dynamodb = ctx.config.dynamodb_client()
        info = table.ensure_table(dynamodb, ctx.config.table, ctx.config.region, create=False)
        if sel.kind == "verify":
            budget = read_budget(dynamodb, info, sel.max_read_capacity, p.capacity_fraction, p.on_demand_capacity)
        else:
            budget = table.write_budget(info, p.max_write_capacity, p.capacity_fraction, p.on_demand_capacity)
        archive_runs, _ = listing.enumerate_runs(ctx.archive, s3)
        store = ctx.store
        default = store.done_runs() if sel.kind == "verify" and not given else None
        selected = runs.select_runs(archive_runs, ctx.archive.uri, given, ctx.since, until, default)
        plan = MaintenancePlan(ctx, sel.kind, selected, budget)
        if sel.kind == "clean":
            marked, cleaned = store.done_runs(), records.cleaned_store(store).done_runs()
            plan.runs_done = [r for r in selected if r in cleaned and r not in marked]
        todo = [r for r in selected if r not in set(plan.runs_done)]
        plan.batches = batches.by_count(todo, p.batch_size, f"{sel.kind}-{invoked()}-")
        return plan

    return make
