"""CleanManifest (undo runs) and VerifyManifest (prove runs): the populator's configs, runners, budgets and markers.

Both read the runs' archive folders with the same Spark job (spark/job.py, in mode "clean" or "verify"), so they
find exactly the keys and etlTimes a populate writes. Bookkeeping under <markers>/<dynamodbTable>/:

- `_clean/run=<id>.json`: the run's items are deleted and its populate marker is removed (the clean report is
  inside). Written only after both; RunBatch deletes it before it writes the run again, so it always means "cleaned,
  nothing written for it since". A clean resumes by skipping runs that have it and no populate marker.
- `_verify/run=<id>.json`: the run's latest verification (the verify report, and the populate marker's time).
  A verify checks the table as it is now, so it checks every selected run again unless --resume is given, which
  skips runs whose last verification passed with the same settings since their populate marker was written.
- Batches are `clean-<stamp>-<runs>` and `verify-<stamp>-<runs>`, stamped per invocation: an EMR step of an
  earlier clean or verify is never adopted as the proof of a new one.

Cleaning a run removes items that later runs may also rely on (their copies of the same events were "already
present", so they wrote none): populate the cleaned runs again, and VerifyManifest shows what is missing meanwhile.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, List, Optional, Set, Tuple

import luigi

from spark import report as reports
from spark import storage
from spark.runid import RUN_PREFIX, parse_run_id
from spark.spec import BatchSpec

from . import leases, runs, table
from .errors import PipelineError
from .markers import MarkerStore, utc_now
from .plan import Context, Params, load_context
from .summary import plural
from .tasks import RunBatch, _Backfill

log = logging.getLogger("manifest.maintenance")

CLEAN_FOLDER, VERIFY_FOLDER = "_clean", "_verify"
MAX_LISTED = 10  # runs named in a one-line error


# --- where the records are ----------------------------------------------------------------------------------

def cleaned_store(store: MarkerStore) -> MarkerStore:
    """The `_clean/run=<id>.json` records, as a marker store of their own."""
    return MarkerStore(store.folder, CLEAN_FOLDER, client=store.client)


def verified_store(store: MarkerStore) -> MarkerStore:
    return MarkerStore(store.folder, VERIFY_FOLDER, client=store.client)


def forget_cleaned(store: MarkerStore, run_ids: Iterable[str]) -> None:
    """Before a run's items are written again: it is no longer cleaned."""
    cleaned = cleaned_store(store)
    for run in run_ids:
        cleaned.unmark(run)


# --- selecting runs (pure) ----------------------------------------------------------------------------------

def parse_runs(text: str) -> List[str]:
    """--runs: run ids separated by commas (or spaces), sorted, each once."""
    found = []
    for item in re.split(r"[,\s]+", (text or "").strip()):
        if not item:
            continue
        run = parse_run_id(item[len(RUN_PREFIX):] if item.startswith(RUN_PREFIX) else item)
        if run is None:
            raise PipelineError(f"--runs: {item!r} is not a run id (YYYY-MM-DD-HH-MM-SS)")
        found.append(run)
    return sorted(set(found))


def parse_until(value: str) -> Optional[str]:
    """--until (inclusive) as a run id: a bare date means the end of that day. Empty means no limit."""
    return runs.parse_since(value, "--until", "23-59-59")


def check_selection(runs_arg: str, since: Optional[str], until_arg: str) -> Tuple[List[str], Optional[str]]:
    """(--runs, --until) checked together with --since; everything here needs no AWS call."""
    given = parse_runs(runs_arg)
    until = parse_until(until_arg)
    if runs_arg.strip() and not given:
        raise PipelineError("--runs names no run")
    if given and (since or until):
        raise PipelineError("--runs names the runs itself: do not combine it with --since or --until")
    if since and until and until < since:
        raise PipelineError(f"--until {until} is before --since {since}")
    return given, until


def select_runs(archive_runs: Iterable[str], archive_uri: str, given: List[str], since: Optional[str],
                until: Optional[str], default: Optional[Iterable[str]] = None) -> List[str]:
    """The runs to act on, oldest first: --runs (each must be in the archive), else the archive's runs (or the
    `default` ones) between --since and --until. Runs that are not in the archive cannot be read: refused."""
    present = set(archive_runs)
    wanted = given or [r for r in (present if default is None else default)
                       if (since is None or r >= since) and (until is None or r <= until)]
    absent = sorted(set(wanted) - present)
    if absent:
        shown = ", ".join(absent[:MAX_LISTED]) + (f" and {len(absent) - MAX_LISTED} more" if len(absent) > MAX_LISTED
                                                  else "")
        if given:
            raise PipelineError(f"--runs: not in the enriched archive {archive_uri}, so cannot be read: {shown}")
        raise PipelineError(f"marked runs not in the enriched archive {archive_uri}, so cannot be read: {shown} "
                            "(leave them out with --since/--until or --runs)")
    return sorted(set(wanted))


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


def stamp() -> str:
    """This invocation's part of its batch ids."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")


# --- the batch tasks ----------------------------------------------------------------------------------------

class _MaintenanceBatch(RunBatch):
    """One Spark job in clean or verify mode over a fixed list of runs, on the populator's runners (_run_job)."""

    mode = ""  # "clean" or "verify"
    done = ""  # "cleaned" or "verified", for messages

    @property
    def task_family_display(self) -> str:
        return f"{type(self).__name__} {self.batch_id}"

    def run(self):
        ctx = self.context()
        with self.hold(ctx.store):
            todo = self.todo(ctx.store)
            log.info("batch %s: %d runs to %s: %s", self.batch_id, len(todo), self.mode, " ".join(todo))
            if not todo:
                self.set_status_message(f"every run was {self.done} meanwhile by another process")
                return
            self.prepare(ctx.store, todo)
            self.set_status_message(f"{len(todo)} runs to {self.mode} at {self.budget:.0f} "
                                    f"{'RCU' if self.mode == 'verify' else 'WCU'}/s")
            self.set_progress_percentage(0)
            with tempfile.TemporaryDirectory(prefix="manifest-") as private:
                outcome = self._run_job(ctx, self.spec(ctx, todo), private)
            self.settle(ctx.store, todo, outcome)

    def spec(self, ctx: Context, todo: List[str]) -> BatchSpec:
        config = ctx.config
        return BatchSpec(
            batch_id=self.batch_id, archive=ctx.archive.uri, runs=todo, reports=ctx.store.reports(self.batch_id).uri,
            table=config.table, region=config.region, ttl_days=self.ttl_days, etl_time=self.etl_time,
            max_write_capacity=self.budget, write_parallelism=self.write_parallelism,
            max_malformed_fraction=self.max_malformed_fraction, max_retry_seconds=self.max_retry_seconds,
            extra={"progress_seconds": self.progress_seconds}, mode=self.mode,
        )

    def hold(self, store: MarkerStore):
        return contextlib.nullcontext()

    def todo(self, store: MarkerStore) -> List[str]:
        raise NotImplementedError

    def prepare(self, store: MarkerStore, todo: List[str]) -> None:
        """Before the job: nothing left from an earlier attempt may look like this one's result."""

    def accept(self, store: MarkerStore, run: str, report: dict) -> None:
        raise NotImplementedError

    def settle(self, store: MarkerStore, todo: List[str], outcome) -> None:
        """Accept each run whose report proves it done; fail the batch naming the others."""
        failed = []
        for i, run in enumerate(todo, 1):
            rep = store.read_json(store.report(self.batch_id, run))
            problem = "the job wrote no report" if rep is None else reports.completeness_problem(rep)
            if rep is not None and problem is None and rep.get("mode") != self.mode:
                problem = f"its report is of a {rep.get('mode', 'populate')} job"
            if problem is None:
                self.accept(store, run, rep)
            else:
                failed.append(f"run {run}: {problem}")
            self.set_progress_percentage(100 * i / max(1, len(todo)))
        self.set_status_message(f"{len(todo) - len(failed)} of {len(todo)} runs {self.done}; {outcome.detail}")
        if failed:
            raise PipelineError(f"batch {self.batch_id}: {len(failed)} of {len(todo)} runs not {self.done} "
                                f"({outcome.detail}): " + "; ".join(failed))
        if not outcome.ok:
            raise PipelineError(f"batch {self.batch_id}: job failed although every run is {self.done}: "
                                f"{outcome.detail}")


class CleanBatch(_MaintenanceBatch):
    """Deletes what its runs wrote, then removes their populate markers and records them as cleaned."""

    mode, done = "clean", "cleaned"

    def complete(self) -> bool:
        store = self.context().store
        return is_cleaned(store, self.runs, cached=True)

    def hold(self, store: MarkerStore):
        """The populator's leases: a run is never cleaned and written at the same time."""
        return leases.hold(store.folder, self.runs, store.client, purpose=f"clean batch {self.batch_id}",
                           waiting=self.set_status_message)

    def todo(self, store: MarkerStore) -> List[str]:
        marked, cleaned = store.done_runs(), cleaned_store(store).done_runs()
        return [r for r in self.runs if r in marked or r not in cleaned]

    def prepare(self, store: MarkerStore, todo: List[str]) -> None:
        forget_cleaned(store, todo)  # a record left by an earlier clean of a run written again since

    def accept(self, store: MarkerStore, run: str, report: dict) -> None:
        store.unmark(run)  # only now that every deletion of the run is proven
        cleaned_store(store).mark(run, report)


class VerifyBatch(_MaintenanceBatch):
    """Checks its runs' items and records each run's verification, missing items included: VerifyManifest judges."""

    mode, done = "verify", "verified"
    budget = luigi.FloatParameter(description="RCU/s this batch may use (the verify's budget over parallel batches)")
    sample = luigi.IntParameter(default=0, description="keys checked per run, drawn at random; 0 = every key")
    sample_seed = luigi.IntParameter(default=0, description="another seed draws another sample")
    resume = luigi.BoolParameter(default=False, description="skip runs verified since their marker was written")

    def complete(self) -> bool:
        return not self.todo(self.context().store)

    def todo(self, store: MarkerStore) -> List[str]:
        """Runs without a verification by this batch (its id is stamped per invocation), or, with --resume, without
        one that still holds."""
        return [r for r in self.runs if not recorded_by(store, r, self.batch_id)
                and not (self.resume and passed_since_marked(store, r, self.sample, self.sample_seed))]

    def spec(self, ctx: Context, todo: List[str]) -> BatchSpec:
        spec = super().spec(ctx, todo)
        spec.max_read_capacity, spec.max_write_capacity = self.budget, 0.0
        spec.sample, spec.sample_seed = self.sample, self.sample_seed
        return spec

    def accept(self, store: MarkerStore, run: str, report: dict) -> None:
        marker = store.read_json(store.marker(run))
        report["populate_marked_at"] = marker.get("marked_at") if marker else None
        verified_store(store).mark(run, report)


def is_cleaned(store: MarkerStore, run_ids: Iterable[str], cached: bool = False) -> bool:
    """Cleaned and not written since: a clean record and no populate marker (one listing of each folder)."""
    marked, cleaned = store.done_runs(cached=cached), cleaned_store(store).done_runs(cached=cached)
    return all(r in cleaned and r not in marked for r in run_ids)


def recorded_by(store: MarkerStore, run: str, batch_id: str) -> bool:
    records = verified_store(store)
    record = records.read_json(records.marker(run)) or {}
    return record.get("report", {}).get("batch_id") == batch_id


def passed_since_marked(store: MarkerStore, run: str, sample: int, seed: int) -> bool:
    """Whether the run's last verification found everything, with these settings, on the current populate."""
    record = verified_store(store).read_json(verified_store(store).marker(run))
    marker = store.read_json(store.marker(run))
    if not record or not marker:
        return False
    rep = record.get("report", {})
    drawn = rep.get("sample") or {"size": 0, "seed": 0}
    return (rep.get("populate_marked_at") == marker.get("marked_at") and not missing_of(rep)
            and (drawn["size"], drawn["seed"] if drawn["size"] else 0) == (sample, seed if sample else 0))


def missing_of(report: dict) -> int:
    counts = report.get("counts", {})
    return counts.get("missing", 0) + counts.get("later_etl_time", 0)


# --- the commands -------------------------------------------------------------------------------------------

@dataclass
class MaintenancePlan:
    context: Context
    selected: List[str]
    budget: float
    batches: List[Tuple[str, List[str]]] = field(default_factory=list)
    done: List[str] = field(default_factory=list)  # clean: selected runs already cleaned


class _Maintenance(_Backfill):
    """What CleanManifest and VerifyManifest share: run selection, the plan, EMR, the JSON output."""

    runs = luigi.Parameter(default="", description="run ids, comma-separated (instead of --since/--until)")
    until = luigi.Parameter(default="", description="last run (inclusive): YYYY-MM-DD or YYYY-MM-DD-HH-mm-ss")
    output_json = luigi.Parameter(default="", description="also write the per-run results as JSON")

    mode = ""
    _plan: Optional[MaintenancePlan] = None

    def complete(self) -> bool:
        return False  # always runs, after its batches, to report

    def plan_params(self) -> Params:
        """The populator's parameters; its write mode is no concern here (fast mode refuses parallel batches)."""
        return dataclasses.replace(super().plan_params(), write_mode="conditional")

    def plan(self) -> MaintenancePlan:
        if self._plan is None:
            self._plan = self.make_plan()
        return self._plan

    def make_plan(self) -> MaintenancePlan:
        """Parameters and configs first (no AWS call), then the table, the archive's runs and the selection."""
        ctx = load_context(self.plan_params())
        given, until = check_selection(self.runs, ctx.since, self.until)
        self.check_options(given, until)
        s3 = storage.s3_client() if ctx.archive.is_s3 else None
        if not storage.exists(ctx.archive, s3):
            raise PipelineError(f"enriched archive {ctx.archive.uri} does not exist or is empty")
        dynamodb = ctx.config.boto3_session().client("dynamodb")
        info = table.ensure_table(dynamodb, ctx.config.table, ctx.config.region, create=False)
        budget = self.budget_of(dynamodb, info)
        archive_runs, _ = runs.enumerate_runs(ctx.archive, s3)
        selected = select_runs(archive_runs, ctx.archive.uri, given, ctx.since, until, self.default_runs(ctx, given))
        plan = MaintenancePlan(ctx, selected, budget)
        self.batch_plan(plan)
        return plan

    def batch_plan(self, plan: MaintenancePlan) -> None:
        todo = [r for r in plan.selected if r not in set(plan.done)]
        prefix = f"{self.mode}-{stamp()}-"
        plan.batches = [(prefix + bid, chunk) for bid, chunk in runs.make_batches(todo, self.batch_size)] if todo \
            else []

    def check_options(self, given: List[str], until: Optional[str]) -> None:
        """Mode-specific parameter checks, before any AWS call."""

    def default_runs(self, ctx: Context, given: List[str]) -> Optional[Set[str]]:
        """The runs to choose from without --runs; None = every run of the archive."""
        return None

    def budget_of(self, dynamodb, info: table.TableInfo) -> float:
        return table.write_budget(info, self.max_write_capacity, self.capacity_fraction, self.on_demand_capacity)

    def batch_kwargs(self) -> dict:
        return {}

    def requires(self):
        plan = self.plan()
        if self.runner == "emr" and plan.batches:  # once, before parallel batches could each create a cluster
            self.emr_runner(plan.context).ensure_cluster()
        workers = plan.context.params.parallel_batches
        kwargs = dict(self.backfill_kwargs(), **self.batch_kwargs())
        task = CleanBatch if self.mode == "clean" else VerifyBatch
        return [task(batch_id=bid, runs=list(chunk), budget=plan.budget / workers, **kwargs)
                for bid, chunk in plan.batches]

    def finish(self, text: str, data: dict) -> None:
        plan = self.plan()
        if self.runner == "emr" and plan.batches:
            self.emr_runner(plan.context).finish(success=True)
        print(text, flush=True)
        if self.output_json:
            with open(self.output_json, "w") as f:
                json.dump(data, f, indent=2, sort_keys=True)
        self.set_status_message(text.splitlines()[0])


class CleanManifest(_Maintenance):
    """Delete the items given runs wrote (etlTime equal to theirs) and unmark them, so they can be written again."""

    mode = "clean"

    def check_options(self, given: List[str], until: Optional[str]) -> None:
        if not given and not self.since and until is None:
            raise PipelineError("CleanManifest needs --runs, or --since and/or --until: it never cleans every run "
                                "by default")

    def batch_plan(self, plan: MaintenancePlan) -> None:
        store = plan.context.store
        marked, cleaned = store.done_runs(), cleaned_store(store).done_runs()
        plan.done = [r for r in plan.selected if r in cleaned and r not in marked]
        super().batch_plan(plan)
        log.info("%d runs selected to clean, %d already cleaned, %d batches; budget %.0f WCU/s",
                 len(plan.selected), len(plan.done), len(plan.batches), plan.budget)

    def run(self):
        plan = self.plan()
        records = cleaned_store(plan.context.store)
        rows = {}
        for run in plan.selected:
            record = records.read_json(records.marker(run)) or {}
            counts = record.get("report", {}).get("counts", {})
            rows[run] = {k: counts.get(k, 0) for k in ("deleted", "not_present", "kept_older", "kept_newer",
                                                         "wcu_consumed")}
            rows[run]["cleaned_at"] = record.get("marked_at")
        table_name = plan.context.config.table
        if not plan.selected:
            text = f"Nothing to clean in {table_name}: no run of the archive is in the range given"
        else:
            text = "\n".join(
                [f"Cleaned table {table_name}: {plural(len(plan.selected) - len(plan.done), 'run')} cleaned now, "
                 f"{len(plan.done)} already clean"]
                + [f"  run={run}: {r['deleted']:,} deleted, {r['not_present']:,} not present, {r['kept_older']:,} "
                   f"kept (older etlTime), {r['kept_newer']:,} kept (newer etlTime)" for run, r in rows.items()]
                + ["Their populate markers are removed: PopulateManifest writes these runs again. Until then, later "
                   "runs' duplicates of their events have no item either (VerifyManifest shows them)."])
        self.finish(text, {"table": table_name, "finished_at": utc_now(), "runs": rows,
                           "already_clean": plan.done})


class VerifyManifest(_Maintenance):
    """Check that the items of given runs (default: every marked run) are in the table; fails if any is missing."""

    mode = "verify"
    max_read_capacity = luigi.FloatParameter(default=0.0, description="RCU/s for the whole verify; 0 = automatic")
    sample = luigi.IntParameter(default=0, description="check this many keys per run, drawn at random; 0 = all")
    sample_seed = luigi.IntParameter(default=0, description="another seed draws another sample")
    resume = luigi.BoolParameter(default=False, description="skip runs whose last verification still holds")

    def check_options(self, given: List[str], until: Optional[str]) -> None:
        if self.sample < 0:
            raise PipelineError(f"--sample must be 0 (every key) or more, not {self.sample}")

    def default_runs(self, ctx: Context, given: List[str]) -> Optional[Set[str]]:
        return None if given else ctx.store.done_runs()

    def budget_of(self, dynamodb, info: table.TableInfo) -> float:
        return read_budget(dynamodb, info, self.max_read_capacity, self.capacity_fraction, self.on_demand_capacity)

    def batch_kwargs(self) -> dict:
        return {"sample": self.sample, "sample_seed": self.sample_seed, "resume": self.resume}

    def batch_plan(self, plan: MaintenancePlan) -> None:
        super().batch_plan(plan)
        log.info("%d runs to verify%s, %d batches; budget %.0f RCU/s", len(plan.selected),
                 f" (a sample of {self.sample} keys per run)" if self.sample else "", len(plan.batches), plan.budget)

    def run(self):
        plan = self.plan()
        store = plan.context.store
        records = verified_store(store)
        batch_ids = {bid for bid, _ in plan.batches}
        rows, stale = {}, []
        for run in plan.selected:
            report = (records.read_json(records.marker(run)) or {}).get("report", {})
            if report.get("batch_id") not in batch_ids and not (self.resume and passed_since_marked(
                    store, run, self.sample, self.sample_seed)):
                stale.append(run)
                continue
            counts = report.get("counts", {})
            rows[run] = {k: counts.get(k, 0) for k in ("found", "missing", "later_etl_time", "not_sampled",
                                                         "expired", "rcu_consumed")}
            rows[run]["examples"] = report.get("missing_examples", [])
        if stale:  # a batch reported success without recording its runs: never take that as a pass
            raise PipelineError(f"{len(stale)} runs have no verification from this run: {', '.join(stale[:10])}")
        table_name = plan.context.config.table
        bad = {run: r for run, r in rows.items() if r["missing"] or r["later_etl_time"]}
        checked = sum(r["found"] + r["missing"] + r["later_etl_time"] for r in rows.values())
        how = f" (a sample of {self.sample} keys per run, seed {self.sample_seed})" if self.sample else ""
        lines = [f"Verified table {table_name}: {plural(len(rows), 'run')}, {plural(checked, 'item')} checked{how}, "
                 + (f"items missing in {plural(len(bad), 'run')}" if bad else "none missing")]
        for run, r in rows.items():
            extra = f", {r['later_etl_time']:,} with a later etlTime" if r["later_etl_time"] else ""
            lines.append(f"  run={run}: {r['found']:,} found, {r['missing']:,} missing{extra}")
        if not rows:
            lines = [f"Nothing to verify in {table_name}: no marked run in the range given"]
        self.finish("\n".join(lines), {"table": table_name, "finished_at": utc_now(), "sample": self.sample,
                                       "sample_seed": self.sample_seed, "runs": rows})
        if bad:
            raise PipelineError(
                f"manifest {table_name}: items missing in {len(bad)} of {len(rows)} runs: "
                + "; ".join(f"run {run}: {r['missing']} missing"
                            + (f", {r['later_etl_time']} with a later etlTime" if r["later_etl_time"] else "")
                            for run, r in bad.items())
                + f" (up to 10 example keys per run in {verified_store(store).folder.uri}/run=<id>.json)")
