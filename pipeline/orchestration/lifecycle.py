"""One batch lifecycle for populate, clean, verify and an import's staging job.

Hold the runs' leases (another process may be doing some of them), keep only the runs still to do, prepare them,
build the job's spec (the one place a spec is made), run the job, read the reports (one listing, then a read per
report present), accept each run its report proves, and fail naming the others. Modes differ only in which runs
are still to do, what is prepared, the spec's options and what accepting a run means.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from pipeline.rules.batches import Batch
from pipeline.rules.errors import AwsRefused, PipelineError
from pipeline.runners.outcome import BatchOutcome, Status
from pipeline.stores import leases, records
from pipeline.stores.markers import MarkerStore
from spark import storage
from spark.report import completeness_problem, report_location
from spark.spec import BatchSpec
from spark.storage import Location

from .context import Context
from .launch import JOB_ENDS, Launcher, job_progress

log = logging.getLogger("manifest.batch")


# --- modes -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Populate:
    """Writes its runs' items and marks each run its report proves (a dataclass: its repr is part of a backfill's
    key, backfill.py)."""

    name, done, unit, leased = "populate", "marked", "WCU", True
    verb = "do"  # "N runs to do": the log line tests and operators read

    def todo(self, store: MarkerStore, runs: Sequence[str], batch_id: str) -> List[str]:
        marked = store.done_runs()
        return [r for r in runs if r not in marked]

    def prepare(self, store: MarkerStore, todo: List[str]) -> None:
        records.forget_cleaned(store, todo)  # about to be written again: no longer a cleaned run

    def spec_options(self, ctx: Context, budget: float) -> Dict:
        p = ctx.params
        return {"write_mode": p.write_mode, "max_write_capacity": budget, "write_expired": p.write_expired}

    def accept(self, store: MarkerStore, run: str, report: dict) -> None:
        store.mark(run, report)


@dataclass(frozen=True)
class Clean(Populate):
    """Deletes what its runs wrote, then removes their populate markers and records them as cleaned."""

    name, done, verb = "clean", "cleaned", "clean"

    def todo(self, store: MarkerStore, runs: Sequence[str], batch_id: str) -> List[str]:
        marked, cleaned = store.done_runs(), records.cleaned_store(store).done_runs()
        return [r for r in runs if r in marked or r not in cleaned]

    def spec_options(self, ctx: Context, budget: float) -> Dict:
        return {"max_write_capacity": budget}

    def accept(self, store: MarkerStore, run: str, report: dict) -> None:
        store.unmark(run)  # only now that every deletion of the run is proven
        records.cleaned_store(store).mark(run, report)


@dataclass(frozen=True)
class Verify(Populate):
    """Checks its runs' items and records each run's verification, missing items included: the command judges."""

    sample: int = 0
    sample_seed: int = 0
    resume: bool = False
    name, done, unit, leased, verb = "verify", "verified", "RCU", False, "verify"

    def todo(self, store: MarkerStore, runs: Sequence[str], batch_id: str) -> List[str]:
        """Runs without a verification by this batch (its id is stamped per invocation), or, with --resume,
        without one that still holds; records are read only for runs the one listing shows."""
        recorded = records.verified_store(store).done_runs(cached=True)  # no record: nothing to read
        return [r for r in runs if r not in recorded or not (
                records.recorded_by(store, r, batch_id)
                or (self.resume and records.passed_since_marked(store, r, self.sample, self.sample_seed)))]

    def prepare(self, store: MarkerStore, todo: List[str]) -> None:
        pass

    def spec_options(self, ctx: Context, budget: float) -> Dict:
        return {"max_read_capacity": budget, "max_write_capacity": 0.0, "sample": self.sample,
                "sample_seed": self.sample_seed}

    def accept(self, store: MarkerStore, run: str, report: dict) -> None:
        marker = store.read_json(store.marker(run))
        report["populate_marked_at"] = marker.get("marked_at") if marker else None
        records.verified_store(store).mark(run, report)


@dataclass(frozen=True)
class Stage(Populate):
    """An import's staging job: the final items of every run as gzip DynamoDB JSON under `staging`."""

    staging: str = ""
    name, done, verb = "import", "staged", "stage"

    def spec_options(self, ctx: Context, budget: float) -> Dict:
        return {"max_write_capacity": 0.0, "write_expired": ctx.params.write_expired, "staging": self.staging}

    def accept(self, store: MarkerStore, run: str, report: dict) -> None:
        pass  # marked only once ImportTable has made the table (importing.py)


# --- the lifecycle -----------------------------------------------------------------------------------------

def build_spec(ctx: Context, mode: str, batch_id: str, runs: Sequence[str], reports: str, **options) -> BatchSpec:
    """Every job's spec, whatever its mode: the backfill's settings, then the mode's options."""
    p = ctx.params
    fields = dict(batch_id=batch_id, archive=ctx.archive.uri, runs=list(runs), reports=reports,
                  table=ctx.config.table, region=ctx.config.region, ttl_days=p.ttl_days, etl_time=p.etl_time,
                  write_parallelism=p.write_parallelism, max_malformed_fraction=p.max_malformed_fraction,
                  max_retry_seconds=p.max_retry_seconds, extra={"progress_seconds": p.progress_seconds}, mode=mode,
                  identities=ctx.job_identities())
    fields.update(options)
    return BatchSpec(**fields)


def run_job(ctx: Context, launcher: Launcher, spec: BatchSpec, record: Location, status: Status,
            with_credentials: bool = True) -> BatchOutcome:
    """Run one job to its end, its spec staged at `record` (with the storage config's keys, if any and asked);
    a stale report from an earlier attempt must never prove this one (unless the launcher adopts earlier jobs,
    which read the same spec)."""
    store = ctx.store
    reports = storage.parse_location(spec.reports)
    if not launcher.keeps_earlier_reports:
        for run in sorted(store.reported_runs(reports) & set(spec.runs)):
            storage.delete(report_location(reports, run), store.client)
    return launcher.run(spec, record, store, status, job_progress(status), with_credentials)


def read_reports(store: MarkerStore, folder: Location, runs: Sequence[str]) -> Dict[str, Optional[dict]]:
    """Each run's report, None where there is none (decided from one listing: a missing object costs more)."""
    present = store.reported_runs(folder)
    return {run: store.read_json(report_location(folder, run)) if run in present else None for run in runs}


def settle(store: MarkerStore, mode, batch_id: str, todo: List[str], outcome: BatchOutcome,
           reports: Dict[str, Optional[dict]], status: Status) -> List[dict]:
    """Accept each run whose report proves it done; fail the batch naming the others (AwsRefused, in AWS's one
    line, when a refusal failed them: every later batch would meet it). The accepted reports."""
    failed, accepted = [], []
    refusals = [outcome.refused] if outcome.refused else []
    for i, run in enumerate(todo, 1):
        rep = reports.get(run)
        problem = "the job wrote no report" if rep is None else completeness_problem(rep)
        if rep is not None and problem is None and rep.get("mode", "populate") != mode.name:
            problem = f"its report is of a {rep.get('mode', 'populate')} job"
        if problem is None:
            mode.accept(store, run, rep)
            accepted.append(rep)
        else:
            failed.append(f"run {run}: {problem}")
            if rep is not None and rep.get("refused"):
                refusals.insert(0, rep["refused"])
        status.percentage(round(JOB_ENDS + (100 - JOB_ENDS) * i / max(1, len(todo)), 1))
    status.message(f"{len(todo) - len(failed)} of {len(todo)} runs {mode.done}; {outcome.detail}")
    if failed and refusals:
        log.error("batch %s: %d of %d runs not %s: AWS refused a request (%s)", batch_id, len(failed), len(todo),
                  mode.done, outcome.detail)
        raise AwsRefused(refusals[0])
    if failed:
        raise PipelineError(f"batch {batch_id}: {len(failed)} of {len(todo)} runs not {mode.done} "
                            f"({outcome.detail}): " + "; ".join(failed))
    if not outcome.ok:
        raise PipelineError(f"batch {batch_id}: job failed although every run is {mode.done}: {outcome.detail}")
    return accepted


def leases_for(ctx: Context, mode, runs: Sequence[str], purpose: str, status: Status):
    """The populator's leases: a run is never written, cleaned or staged by two processes at once."""
    if not mode.leased:
        return contextlib.nullcontext()
    store = ctx.store
    return leases.hold(store.folder, list(runs), store.client, purpose=purpose, waiting=status.message)


def run_batch(ctx: Context, launcher: Launcher, batch: Batch, mode, budget: float, status: Status) -> List[dict]:
    """The whole lifecycle of one batch; the reports of the runs it accepted ([] when none was left to do)."""
    store = ctx.store
    with leases_for(ctx, mode, batch.runs, f"{mode.name} batch {batch.id}", status):
        todo = mode.todo(store, batch.runs, batch.id)
        log.info("batch %s: %d runs to %s: %s", batch.id, len(todo), mode.verb, " ".join(todo))
        if not todo:
            status.message(f"every run was {mode.done} meanwhile by another process")
            return []
        mode.prepare(store, todo)
        status.message(f"{len(todo)} runs to {mode.verb} at {budget:.0f} {mode.unit}/s")
        status.percentage(0)
        reports = store.reports(batch.id)
        spec = build_spec(ctx, mode.name, batch.id, todo, reports.uri, **mode.spec_options(ctx, budget))
        outcome = run_job(ctx, launcher, spec, store.batch_spec(batch.id), status)
        started = time.monotonic()
        try:
            return settle(store, mode, batch.id, todo, outcome, read_reports(store, reports, todo), status)
        finally:
            log.info("batch %s: reports read and runs %s in %.2f s", batch.id, mode.done, time.monotonic() - started)
