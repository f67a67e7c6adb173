"""What every command (PopulateManifest, CleanManifest, VerifyManifest) and its tasks share: the parameters, with
their defaults in luigi.cfg's [PopulateManifest]; one-line failures in luigid; what the process does as it exits;
how a batch that AWS refused stops the others from starting.

The command's task holds every parameter; the others carry only their backfill's key, so what the whole backfill
shares is never repeated in a task id, and no task parameter ever holds a secret (only config file paths).
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import signal
from typing import Callable, Dict

import luigi

from pipeline.configs.params import Params
from pipeline.orchestration.backfill import Backfill, find
from pipeline.rules.errors import PipelineError
from pipeline.runners.outcome import Status
from spark.refusals import told

from .scheduler import check_reachable

log = logging.getLogger("manifest.tasks")

# Backfill key -> what the process does for it as it exits, however it ends: the summary of a backfill a batch of
# which failed (Luigi never runs the command's task then, and a failed backfill needs its summary most), then the
# runner's end (staged secrets deleted).
AT_EXIT: Dict[str, Callable[[], None]] = {}


def run_at_exit() -> None:
    for hook in list(AT_EXIT.values()):
        hook()
    AT_EXIT.clear()


atexit.register(run_at_exit)


def stop_starting_batches(worker_pid: int) -> None:
    """Make the Luigi worker stop asking for work, Luigi's own way (SIGUSR1, Worker.handle_interrupt): batches not
    started stay pending and the command ends once the running ones do. Where no handler is installed, later
    batches refuse to start instead (Backfill.run_batch)."""
    if callable(signal.getsignal(signal.SIGUSR1)):
        os.kill(worker_pid, signal.SIGUSR1)


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
    write_mode = luigi.Parameter(default="fast", description="fast (default) or conditional; docs/writing.md")
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

    _finished = False  # the runner ended after a backfill that left nothing to do (set where run() ends it)

    def start(self, owner: Backfill) -> None:
        """Before its first batch, once: the runner prepared (before parallel batches could each create an EMR
        cluster), and what the process does for the backfill as it exits."""
        if owner.key not in AT_EXIT:
            AT_EXIT[owner.key] = lambda: self.at_exit(owner)
            owner.prepare()

    def finish(self, owner: Backfill) -> None:
        """After a backfill that left nothing to do: the runner ends (an EMR cluster it created is terminated)."""
        owner.finish(success=True)
        self._finished = True

    def at_exit(self, owner: Backfill) -> None:
        """Unless finished: the runner's end after a failure (staged secrets deleted, a cluster left to resume)."""
        if self._finished:
            return
        try:
            owner.finish(success=False)
        except Exception as e:  # noqa: BLE001 - best effort while exiting: say so, never mask the exit code
            log.warning("the runner's end after a failure: %s", told(e)[0])


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


