"""The Luigi face of a backfill: thin tasks over backfill.py.

    PopulateManifest --> RunBatch (one per batch, oldest first) --> EnumerateRuns --> ValidateConfigs

The command's task holds every parameter; the others carry only their backfill's key (and a batch its first and
last run and their count), so luigid shows each batch by its runs. Validation and enumeration happen while Luigi
schedules (a bad input fails there, before any AWS call, with exit 35); their tasks then show the outcome.
Each batch's outputs are its runs' markers.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import time
from typing import Callable, Dict

import luigi

from spark.errors import one_line

from .backfill import Backfill, find, open_backfill
from .errors import PipelineError
from .estimate import Prices
from .lifecycle import Populate
from .params import Params
from .plan import make_plan
from .results import collect
from .runners import Status
from .scheduler import check_reachable
from .summary import after_run, dry_run
from .targets import record_target

log = logging.getLogger("manifest.tasks")

# Backfill key -> its summary, written as the process exits if a batch of it failed (Luigi never runs the command's
# task then, and a failed backfill needs its summary most).
EXIT_SUMMARIES: Dict[str, Callable[[], None]] = {}


def summarise_at_exit() -> None:
    for summarise in list(EXIT_SUMMARIES.values()):
        summarise()
    EXIT_SUMMARIES.clear()


atexit.register(summarise_at_exit)


def config_section(name: str) -> dict:
    """A luigi.cfg section as plain strings ({} when absent)."""
    config = luigi.configuration.get_config()
    return dict(config.items(name)) if config.has_section(name) else {}


class OneLineFailures:
    """What luigid shows of a failure: the one-line message of a user's problem, the traceback otherwise."""

    def on_failure(self, exception: BaseException) -> str:
        if isinstance(exception, PipelineError):
            return str(exception)
        return super().on_failure(exception)


class BackfillCommand(OneLineFailures, luigi.Task):
    """The parameters of a command (defaults in luigi.cfg's [PopulateManifest], shared by every command)."""

    enriched_archive = luigi.Parameter(default="", description="s3://bucket/prefix (s3a://, s3n://) or a directory")
    storage_config = luigi.Parameter(description="duplicate-storage config JSON (amazon_dynamodb_config)")
    resolver = luigi.Parameter(description="Iglu resolver config JSON")
    since = luigi.Parameter(default="", description="first run to do: YYYY-MM-DD or YYYY-MM-DD-HH-mm-ss")
    markers = luigi.Parameter(default=".manifest-markers", description="S3 prefix or directory for run markers")
    runner = luigi.Parameter(default="local", description="local (spark-submit on this machine) or emr")
    batch_size = luigi.IntParameter(default=1000, description="most runs one Spark job may hold")
    batch_minutes = luigi.FloatParameter(default=10.0, description="minutes of writing at the budget per batch")
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_reachable()  # before Luigi spends a minute retrying an absent luigid

    def params(self) -> Params:
        shared = {name: getattr(self, name) for name in BackfillCommand.get_param_names()}
        return Params(**shared, parallel_batches=max(1, luigi.interface.core().workers),
                      emr=tuple(sorted(config_section("emr").items())),
                      pricing=tuple(sorted(config_section("pricing").items())))

    def complete(self) -> bool:
        return False  # always runs, after its batches, to report

    def report(self, text: str, data: dict, output_json: str) -> None:
        print(text, flush=True)
        if output_json:
            with open(output_json, "w") as f:
                json.dump(data, f, indent=2, sort_keys=True)
        if self.set_status_message:  # None outside run(): an exit hook's summary is for the console only
            self.set_status_message(text.splitlines()[0] if text else "done")


# Every command reads a default it has no section for from [PopulateManifest], so luigi.cfg states each shared
# default once (CleanManifest's markers are PopulateManifest's markers).
for _name, _param in BackfillCommand.get_params():
    _param._config_path = {"section": "PopulateManifest", "name": _name}


class BackfillTask(OneLineFailures, luigi.Task):
    """A task of one backfill, known by its key (backfill.py): what the whole backfill shares is not repeated."""

    backfill = luigi.Parameter(description="the backfill's key: a digest of all its settings")

    @property
    def owner(self) -> Backfill:
        return find(self.backfill)

    def status(self) -> Status:
        return Status(self.set_status_message, self.set_progress_percentage, self.set_tracking_url)


class ValidateConfigs(BackfillTask):
    """The storage config and resolver, validated (while scheduling); shows what they say."""

    def complete(self) -> bool:
        return self.owner.shown("validated")

    def run(self):
        self.set_status_message(self.owner.validated())
        self.owner.show("validated")


class EnumerateRuns(BackfillTask):
    """The archive's runs, the markers and the batches (planned while scheduling); shows the plan's outcome."""

    def requires(self):
        return ValidateConfigs(backfill=self.backfill)

    def complete(self) -> bool:
        return self.owner.shown("enumerated")

    def run(self):
        self.set_status_message(self.owner.plan.outcome())
        self.owner.show("enumerated")


class RunBatch(BackfillTask):
    """One Spark job over consecutive runs; marks each run whose report proves all its items written."""

    first_run = luigi.Parameter(description="the batch's oldest run")
    last_run = luigi.Parameter(description="the batch's newest run")
    runs = luigi.IntParameter(description="how many runs the batch holds")

    def batch(self):
        return self.owner.batch(self.first_run, self.last_run, self.runs)

    @property
    def priority(self) -> int:
        return self.owner.priority(self.batch()[0])

    def requires(self):
        return EnumerateRuns(backfill=self.backfill)

    def output(self):
        store = self.owner.context.store
        return [record_target(store.marker(run), lambda run=run: run in store.done_runs(cached=True))
                for run in self.batch()[1].runs]

    def run(self):
        index, batch = self.batch()
        self.owner.run_batch(batch, index, self.status())


class ImportBatch(RunBatch):
    """Every run to do in one job staging the final items, then ImportTable, TTL, and the runs' markers."""


def batch_tasks(owner: Backfill, family: type) -> list:
    """The plan's batches as tasks of `family` (or the enumeration alone when there is none)."""
    tasks = [family(backfill=owner.key, first_run=b.first, last_run=b.last, runs=len(b.runs))
             for b in owner.plan.batches]
    return tasks or [EnumerateRuns(backfill=owner.key)]


class PopulateManifest(BackfillCommand):
    """Back-fill the manifest from every run at or after --since; run it again to resume."""

    dry_run = luigi.BoolParameter(default=False, description="plan and estimate, submit nothing, write nothing")
    count_events = luigi.BoolParameter(default=False, description="dry run: count valid events with a Spark pass")
    method = luigi.Parameter(default="write", description="write: write items; import: create the table by "
                                                          "DynamoDB ImportTable (the table must not exist)")
    output_json = luigi.Parameter(default="", description="also write the dry-run plan or the summary as JSON")

    _summarised = False

    def open(self) -> Backfill:
        return open_backfill(self.params().replace(method=self.method, dry_run=self.dry_run), Populate(), make_plan)

    def requires(self):
        owner = self.open()
        plan = owner.plan
        if self.dry_run:
            return EnumerateRuns(backfill=owner.key)
        if plan.batches and owner.key not in EXIT_SUMMARIES:
            EXIT_SUMMARIES[owner.key] = lambda: self._summarise_unfinished(owner)
            owner.launcher.prepare()  # once, before parallel batches could each create an EMR cluster
        return batch_tasks(owner, ImportBatch if self.method == "import" else RunBatch)

    def run(self):
        owner = self.open()
        plan = owner.plan
        if self.dry_run:
            emr = owner.context.emr if self.runner == "emr" else None
            counted = owner.count_events(self.set_status_message) if self.count_events else None
            text, data = dry_run(plan, counted_events=counted, prices=Prices.from_mapping(dict(owner.params.pricing)),
                                 emr=emr)
            self.report(text, data, self.output_json)
            return
        data = self._summarise(owner)
        if plan.batches and not data.get("runs_left"):
            owner.launcher.finish(success=True)

    def _summarise(self, owner: Backfill) -> dict:
        done_now, reasons = collect(owner.plan)
        text, data = after_run(owner.plan, owner.started, done_now, reasons)
        store = owner.context.store
        stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(owner.started))
        store.write_json(store.summary(f"{stamp}-{os.getpid()}"), data)  # two backfills never share a summary
        self._summarised = True
        self.report(text, data, self.output_json)
        return data

    def _summarise_unfinished(self, owner: Backfill) -> None:
        """At exit: Luigi never runs this task when a batch failed, and a failed backfill needs its summary most."""
        if self._summarised or not owner.standing.failed_batches.value:
            return
        try:
            self._summarise(owner)
        except Exception as e:  # noqa: BLE001 - best effort while exiting: say so, never mask the exit code
            log.warning("no summary written: %s", one_line(e))
