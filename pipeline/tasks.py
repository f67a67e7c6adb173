"""Thin Luigi tasks over the plan, the runners and the marker store.

PopulateManifest plans (configs, table, runs) and requires one RunBatch per batch of runs not yet marked; each
RunBatch runs one Spark job (local or an EMR step) and marks the runs its reports prove complete.
"""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
import time
from typing import List, Optional

import luigi

from spark import report as reports
from spark import storage
from spark.errors import one_line
from spark.spec import BatchSpec

from . import leases, local, summary
from .emr import EmrRunner, EmrSettings, session_for
from .emretlrunner import merge_settings, read_emretlrunner_config
from .errors import PipelineError
from .estimate import Prices
from .markers import MarkerStore
from .plan import Context, Params, Plan, load_context, make_plan

log = logging.getLogger("manifest.tasks")

# Batches failed in this process or in the Luigi worker processes it forks (shared memory): only a backfill whose
# own batch failed gets its summary at exit, not one that left its batches to another process under luigid.
_FAILED_BATCHES = multiprocessing.Value("i", 0)


def config_section(name: str) -> dict:
    """A luigi.cfg section as plain strings ({} when absent)."""
    config = luigi.configuration.get_config()
    return dict(config.items(name)) if config.has_section(name) else {}


class _Backfill(luigi.Task):
    """The parameters every task of one backfill shares (defaults documented in luigi.cfg)."""

    enriched_archive = luigi.Parameter(default="", description="s3://bucket/prefix (s3a://, s3n://) or a directory")
    storage_config = luigi.Parameter(description="duplicate-storage config JSON (amazon_dynamodb_config)")
    resolver = luigi.Parameter(description="Iglu resolver config JSON")
    since = luigi.Parameter(default="", description="first run to do: YYYY-MM-DD or YYYY-MM-DD-HH-mm-ss")
    markers = luigi.Parameter(default=".manifest-markers", description="S3 prefix or directory for run markers")
    runner = luigi.Parameter(default="local", description="local (spark-submit on this machine) or emr")
    batch_size = luigi.IntParameter(default=10, description="runs per Spark job")
    create_table = luigi.BoolParameter(default=False, description="create the table when missing")
    ttl_days = luigi.IntParameter(default=180, description="item ttl = etlTime + ttl_days (the shredders' 180)")
    etl_time = luigi.Parameter(default="run", description="run: the run's earliest etl_tstamp; event: per event")
    write_mode = luigi.Parameter(default="fast", description="fast (default) or conditional; see README")
    max_write_capacity = luigi.FloatParameter(default=0.0, description="WCU/s for the whole job; 0 = automatic")
    capacity_fraction = luigi.FloatParameter(default=0.5, description="share of provisioned WCU used when automatic")
    on_demand_capacity = luigi.FloatParameter(default=1000.0, description="WCU/s used on an on-demand table")
    max_malformed_fraction = luigi.FloatParameter(default=0.01, description="a run with more malformed lines fails")
    write_expired = luigi.BoolParameter(default=False, description="also write items whose ttl is already past")
    max_retry_seconds = luigi.FloatParameter(default=600.0, description="how long one item may stay throttled")
    spark_master = luigi.Parameter(default="local[*]", description="local runner's Spark master")
    write_parallelism = luigi.IntParameter(default=0, description="concurrent writing tasks; 0 = Spark's default")
    progress_seconds = luigi.FloatParameter(default=30.0, description="seconds between a batch's progress lines")
    emretlrunner_config = luigi.Parameter(default="", description="EmrEtlRunner config.yml: archive, region, EMR")
    log_path = luigi.Parameter(default="", description="EMR runner: S3 location for the cluster's logs")
    profile = luigi.Parameter(default="", description="EMR runner: AWS profile for EMR and staging")
    jar = luigi.Parameter(default="", description="EMR runner: S3 prefix of job code you uploaded yourself")

    def on_failure(self, exception: BaseException) -> str:
        """What luigid shows: the one-line message for a user's problem, the traceback otherwise."""
        if isinstance(exception, PipelineError):
            return str(exception)
        return super().on_failure(exception)

    def backfill_kwargs(self) -> dict:
        return {name: getattr(self, name) for name in _Backfill.get_param_names()}

    def plan_params(self) -> Params:
        workers = luigi.interface.core().workers
        return Params(
            enriched_archive=self.enriched_archive or self.emretlrunner_settings().get("archive", ""),
            storage_config=self.storage_config, resolver=self.resolver,
            markers=self.markers, since=self.since, runner=self.runner, batch_size=self.batch_size,
            create_table=self.create_table, max_write_capacity=self.max_write_capacity,
            capacity_fraction=self.capacity_fraction, on_demand_capacity=self.on_demand_capacity,
            write_mode=self.write_mode, parallel_batches=max(1, workers),
        )

    def emretlrunner_settings(self) -> dict:
        return read_emretlrunner_config(self.emretlrunner_config) if self.emretlrunner_config else {}

    def emr_runner(self, ctx: Context) -> EmrRunner:
        """luigi.cfg's [emr], then what EmrEtlRunner's config.yml says, then the explicit parameters, which win."""
        explicit = {"log_uri": self.log_path, "profile": self.profile, "job_code_uri": self.jar}
        from_yml = {k: v for k, v in self.emretlrunner_settings().items() if k != "archive"}
        settings = EmrSettings.from_mapping(merge_settings(explicit, {**config_section("emr"), **from_yml}))
        return EmrRunner(settings, ctx.backfill_id, ctx.store.staging(), session_for(settings))

    _context: Optional[Context] = None

    def context(self) -> Context:
        """Made once per task instance: Luigi calls requires() and complete() many times."""
        if self._context is None:
            self._context = load_context(self.plan_params())
        return self._context


# Every task of the family reads a default it has no section for from [PopulateManifest], so luigi.cfg states
# each shared default once (CleanManifest's markers are PopulateManifest's markers).
for _name, _param in _Backfill.get_params():
    _param._config_path = {"section": "PopulateManifest", "name": _name}


class RunBatch(_Backfill):
    """One Spark job over a fixed list of runs; marks each run whose report proves all its items written."""

    # The batch's progress percentage: its job reports 0-100 and is shown between these; marking is the rest.
    JOB_STARTS, JOB_ENDS = 2.0, 95.0

    batch_id = luigi.Parameter()
    runs = luigi.ListParameter()
    budget = luigi.FloatParameter(description="WCU/s this batch may use (the backfill's budget over parallel batches)")

    @property
    def priority(self) -> float:
        """Oldest batches first: earlier etlTimes land first, so later runs' copies are skipped, not overwritten."""
        return -float(min(self.runs).replace("-", "")) if self.runs else 0.0

    def complete(self) -> bool:
        return set(self.runs) <= self.context().store.done_runs(cached=True)

    def on_failure(self, exception: BaseException) -> str:
        with _FAILED_BATCHES.get_lock():
            _FAILED_BATCHES.value += 1
        return super().on_failure(exception)

    def run(self):
        ctx = self.context()
        store, config = ctx.store, ctx.config
        # Another process (other flags, another machine) may be doing some of these runs: wait for its leases,
        # then do only the runs still unmarked.
        with leases.hold(store.folder, self.runs, store.client, purpose=f"batch {self.batch_id}",
                         waiting=self.set_status_message):
            todo = [r for r in self.runs if r not in store.done_runs()]
            log.info("batch %s: %d runs to do: %s", self.batch_id, len(todo), " ".join(todo))
            if not todo:
                self.set_status_message("every run was done meanwhile by another process")
                return
            from .maintenance import forget_cleaned  # here: maintenance builds on this module

            forget_cleaned(store, todo)  # about to be written again: no longer a cleaned run
            budget = self.budget
            self.set_status_message(f"{len(todo)} runs to do at {budget:.0f} WCU/s")
            self.set_progress_percentage(0)
            with tempfile.TemporaryDirectory(prefix="manifest-") as private:
                spec = BatchSpec(
                    batch_id=self.batch_id, archive=ctx.archive.uri, runs=todo,
                    reports=store.reports(self.batch_id).uri, table=config.table, region=config.region,
                    ttl_days=self.ttl_days, etl_time=self.etl_time, write_mode=self.write_mode,
                    max_write_capacity=budget, write_parallelism=self.write_parallelism,
                    max_malformed_fraction=self.max_malformed_fraction, write_expired=self.write_expired,
                    max_retry_seconds=self.max_retry_seconds, extra={"progress_seconds": self.progress_seconds},
                )
                outcome = self._run_job(ctx, spec, private)
            self._mark(store, todo, outcome)

    def _run_job(self, ctx: Context, spec: BatchSpec, private: str):
        if self.runner == "emr":
            return self._run_on_emr(ctx, spec)
        store = ctx.store
        for run in spec.runs:  # a stale report from an earlier attempt must never prove this one
            storage.delete(store.report(self.batch_id, run), store.client)
        credentials = ctx.config.credentials()
        if credentials:
            path = os.path.join(private, "credentials.json")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(credentials, f)
            spec.credentials = path
        spec_loc = store.batch_spec(self.batch_id)
        store.write_json(spec_loc, json.loads(spec.to_json()))
        if store.folder.is_s3:  # the local job reads its spec from a local copy: S3 is only for the record
            local_spec = os.path.join(private, "spec.json")
            with open(local_spec, "w") as f:
                f.write(spec.to_json())
            spec_uri = local_spec
        else:
            spec_uri = spec_loc.uri
        self.set_tracking_url("http://127.0.0.1:4040")
        self.set_progress_percentage(self.JOB_STARTS)  # leases held, spec staged: the job is next
        return local.run_local(spec_uri, self.batch_id, self._progress, master=self.spark_master)

    def _run_on_emr(self, ctx: Context, spec: BatchSpec):
        """One step per batch. Reports are kept: a step adopted or completed earlier may already have proven runs,
        and it reads the same spec location, so a resumed run waits for it instead of submitting another."""
        runner = self.emr_runner(ctx)
        spec.credentials = runner.stage_credentials(ctx.config.credentials())
        spec_loc = ctx.store.batch_spec(self.batch_id)
        ctx.store.write_json(spec_loc, json.loads(spec.to_json()))
        self.set_progress_percentage(self.JOB_STARTS)
        outcome = runner.run_batch(self.batch_id, spec_loc.uri, self._progress, self.set_tracking_url)
        reported = all(ctx.store.read_json(ctx.store.report(self.batch_id, r)) for r in spec.runs)
        if outcome.ok and not reported:  # completed earlier, yet some run has no report: run it again
            outcome = runner.run_batch(self.batch_id, spec_loc.uri, self._progress, self.set_tracking_url,
                                       resubmit_completed=True)
        return outcome

    def _progress(self, message: str, percentage: Optional[float]) -> None:
        self.set_status_message(message)
        if percentage is not None:
            share = (self.JOB_ENDS - self.JOB_STARTS) * percentage / 100
            self.set_progress_percentage(round(self.JOB_STARTS + share, 1))

    def _mark(self, store, runs: List[str], outcome) -> None:
        failed = []
        for i, run in enumerate(runs, 1):
            rep = store.read_json(store.report(self.batch_id, run))
            problem = "the job wrote no report" if rep is None else reports.completeness_problem(rep)
            if problem is None:
                store.mark(run, rep)
            else:
                failed.append(f"run {run}: {problem}")
            self.set_progress_percentage(self.JOB_ENDS + (100 - self.JOB_ENDS) * i / max(1, len(runs)))
        self.set_status_message(f"{len(runs) - len(failed)} of {len(runs)} runs marked; {outcome.detail}")
        if failed:
            raise PipelineError(
                f"batch {self.batch_id}: {len(failed)} of {len(runs)} runs not marked ({outcome.detail}): "
                + "; ".join(failed)
            )
        if not outcome.ok:
            raise PipelineError(f"batch {self.batch_id}: job failed although every run is complete: {outcome.detail}")


def _valid_events(store: MarkerStore, folder: storage.Location, runs: List[str]) -> dict:
    """Valid events per run from a count pass's reports; a run without a report stays estimated from bytes."""
    counted = {}
    for run in runs:
        data = store.read_json(reports.report_location(folder, run))
        if data is not None:
            counted[run] = data["valid_events"]
    return counted


class PopulateManifest(_Backfill):
    """Back-fill the manifest from every run at or after --since; run it again to resume."""

    dry_run = luigi.BoolParameter(default=False, description="plan and estimate, submit nothing, write nothing")
    count_events = luigi.BoolParameter(default=False, description="dry run: count valid events with a Spark pass")
    method = luigi.Parameter(default="write", description="write: write items; import: create the table by "
                                                          "DynamoDB ImportTable (the table must not exist)")
    output_json = luigi.Parameter(default="", description="also write the dry-run plan or the summary as JSON")

    def complete(self) -> bool:
        return False  # always runs, after its batches, to write the summary

    _plan: Optional[Plan] = None
    _started: float = 0.0
    _summarised: bool = False
    _summary_pending: bool = False
    _summary_name: str = ""

    def plan_params(self) -> Params:
        return dataclasses.replace(super().plan_params(), method=self.method, dry_run=self.dry_run)

    def plan(self) -> Plan:
        if self._plan is None:
            self._started = time.time()  # the backfill's start, for the summary's elapsed time and WCU/s
            stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(self._started))
            self._summary_name = f"{stamp}-{os.getpid()}"  # two backfills at once never share a summary
            self._plan = make_plan(self.plan_params())
        return self._plan

    def count_valid_events(self, plan: Plan) -> dict:
        """--count-events: one count-only Spark pass over the runs to do, which writes nothing to the table; its
        spec and reports live in a temporary folder (in `_staging/` for EMR, deleted after reading)."""
        if not plan.runs_todo:
            return {}
        ctx = plan.context
        batch_id = "count-" + hashlib.sha256(" ".join(plan.runs_todo).encode()).hexdigest()[:12]
        spec = BatchSpec(batch_id=batch_id, archive=ctx.archive.uri, runs=plan.runs_todo, reports="",
                         table=ctx.config.table, region=ctx.config.region, count_only=True,
                         extra={"progress_seconds": self.progress_seconds})
        if self.runner == "emr":
            return self._count_on_emr(ctx, spec)
        with tempfile.TemporaryDirectory(prefix="manifest-count-") as tmp:
            spec.reports = tmp
            path = os.path.join(tmp, "spec.json")
            with open(path, "w") as f:
                f.write(spec.to_json())
            local.run_local(path, batch_id, lambda message, _pct: self.set_status_message(message),
                            master=self.spark_master)
            return _valid_events(ctx.store, storage.parse_location(tmp), spec.runs)

    def _count_on_emr(self, ctx: Context, spec: BatchSpec) -> dict:
        """A count step on the backfill's cluster (created for the count, then terminated, when there is none).
        The step's name comes from the runs, so a dry run repeated while its step still runs adopts it."""
        runner = self.emr_runner(ctx)
        folder = ctx.store.staging().child("counts", spec.batch_id)
        spec.reports = folder.child("reports").uri
        spec_loc = folder.child("spec.json")
        ctx.store.write_json(spec_loc, json.loads(spec.to_json()))
        try:
            outcome = runner.run_batch(spec.batch_id, spec_loc.uri, lambda m, _p: self.set_status_message(m),
                                       self.set_tracking_url)
            counted = _valid_events(ctx.store, folder.child("reports"), spec.runs)
            if not outcome.ok:
                log.warning("the count step failed (%s): %d of %d runs counted", outcome.detail, len(counted),
                            len(spec.runs))
        finally:
            storage.delete_all(folder, ctx.store.client)
            runner.terminate_created_cluster()
        return counted

    def requires(self):
        plan = self.plan()
        if self.dry_run:
            return []
        if not self._summary_pending:
            self._summary_pending = True
            atexit.register(self._summarise_unfinished)
        if self.runner == "emr" and plan.batches:  # once, before parallel batches could each create a cluster
            self.emr_runner(plan.context).ensure_cluster()
        kwargs = self.backfill_kwargs()
        if self.method == "import":  # its one batch: every run to do, then ImportTable (importer.py)
            from .importer import ImportBatch

            return [ImportBatch(batch_id=bid, runs=list(batch), budget=plan.budget, **kwargs)
                    for bid, batch in plan.batches]
        budget = plan.budget / plan.context.params.parallel_batches
        return [RunBatch(batch_id=bid, runs=list(batch), budget=budget, **kwargs) for bid, batch in plan.batches]

    def run(self):
        plan = self.plan()
        if self.dry_run:
            emr = config_section("emr") if self.runner == "emr" else None
            counted = self.count_valid_events(plan) if self.count_events else None
            text, data = summary.dry_run(plan, counted_events=counted,
                                         prices=Prices.from_mapping(config_section("pricing")), emr=emr)
            self._report(text, data)
            return
        data = self._summarise(plan)
        if self.runner == "emr" and not data.get("runs_left"):
            self.emr_runner(plan.context).finish(success=True)

    def _summarise(self, plan: Plan) -> dict:
        text, data = summary.after_run(plan, self._started)
        plan.context.store.write_json(plan.context.store.summary(self._summary_name), data)
        self._summarised = True
        self._report(text, data)
        return data

    def _summarise_unfinished(self) -> None:
        """At exit: Luigi never runs this task when a batch failed, and a failed backfill needs its summary most."""
        plan = self._plan
        if self._summarised or plan is None or not _FAILED_BATCHES.value:
            return
        try:
            self._summarise(plan)
        except Exception as e:  # noqa: BLE001 - best effort while exiting: say so, never mask the exit code
            log.warning("no summary written: %s", one_line(e))

    def _report(self, text: str, data: dict) -> None:
        print(text, flush=True)
        if self.output_json:
            with open(self.output_json, "w") as f:
                json.dump(data, f, indent=2, sort_keys=True)
        if self.set_status_message:  # None outside run(): the exit hook's summary is for the console only
            self.set_status_message(text.splitlines()[0] if text else "done")
