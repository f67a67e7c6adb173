"""Launching one batch's Spark job on the configured runner: pyspark's spark-submit here, or a step on EMR.

Both take the same spec (spark/spec.py), staged where the job reads it, with the storage config's keys (if any)
staged privately beside it and only their location in the spec.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, Dict, Optional, Protocol

from pipeline.configs.emr_settings import EmrSettings
from pipeline.runners import local
from pipeline.runners.emr import EmrRunner, session_for
from pipeline.runners.outcome import BatchOutcome, Progress, Status
from pipeline.stores.markers import MarkerStore
from spark.spec import BatchSpec
from spark.storage import Location, parse_location

from .context import Context

# The batch's progress percentage: its job reports 0-100 and is shown between these; marking is the rest.
JOB_STARTS, JOB_ENDS = 2.0, 95.0


def job_progress(status: Status) -> Progress:
    """The job's own progress lines as the batch's status message and progress bar."""

    def report(message: str, percentage: Optional[float]) -> None:
        status.message(message)
        if percentage is not None:
            status.percentage(round(JOB_STARTS + (JOB_ENDS - JOB_STARTS) * percentage / 100, 1))

    return report


class LocalLauncher:
    """spark-submit on this machine; the job's reports of an earlier attempt are never taken as this one's."""

    keeps_earlier_reports = False

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def prepare(self) -> None:
        pass

    def run(self, spec: BatchSpec, record: Location, store: MarkerStore, status: Status, progress: Progress,
            with_credentials: bool = True) -> BatchOutcome:
        """Stage the spec at `record` (and privately, with the keys), run the job to its end."""
        with tempfile.TemporaryDirectory(prefix="manifest-") as private:
            credentials = self.ctx.config.credentials() if with_credentials else None
            if credentials:
                path = os.path.join(private, "credentials.json")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    json.dump(credentials, f)
                spec.credentials = path
            store.write_json(record, json.loads(spec.to_json()))
            spec_uri = record.uri
            if record.is_s3:  # the local job reads its spec from a local copy: S3 is only for the record
                spec_uri = os.path.join(private, "spec.json")
                with open(spec_uri, "w") as f:
                    f.write(spec.to_json())
            status.tracking_url("http://127.0.0.1:4040")
            status.percentage(JOB_STARTS)
            return local.run_local(spec_uri, spec.batch_id, progress, master=self.ctx.params.spark_master)

    def finish(self, success: bool) -> None:
        pass

    def terminate_created_cluster(self) -> None:
        pass


class EmrLauncher:
    """One step per batch on the backfill's cluster. Reports are kept: a step adopted or completed earlier may
    already have proven runs, and it reads the same spec location, so a resumed run waits for it instead of
    submitting another."""

    keeps_earlier_reports = True

    def __init__(self, ctx: Context, runner: Optional[EmrRunner] = None):
        self.ctx = ctx
        if runner is None:
            settings = EmrSettings.from_mapping(ctx.emr or {})
            runner = EmrRunner(settings, ctx.backfill_id, ctx.store.staging(), session_for(settings))
        self.runner = runner

    def prepare(self) -> None:
        """Once, before parallel batches could each create a cluster."""
        self.runner.ensure_cluster()

    def run(self, spec: BatchSpec, record: Location, store: MarkerStore, status: Status, progress: Progress,
            with_credentials: bool = True) -> BatchOutcome:
        if with_credentials:
            spec.credentials = self.runner.stage_credentials(self.ctx.config.credentials())
        store.write_json(record, json.loads(spec.to_json()))
        status.percentage(JOB_STARTS)
        outcome = self.runner.run_batch(spec.batch_id, record.uri, progress, status.tracking_url)
        reported = set(spec.runs) <= store.reported_runs(parse_location(spec.reports))
        if outcome.ok and not reported:  # completed earlier, yet some run has no report: run it again
            outcome = self.runner.run_batch(spec.batch_id, record.uri, progress, status.tracking_url,
                                            resubmit_completed=True)
        return outcome

    def finish(self, success: bool) -> None:
        self.runner.finish(success=success)

    def terminate_created_cluster(self) -> None:
        self.runner.terminate_created_cluster()


class Launcher(Protocol):
    """What the batch lifecycle needs of a runner (LocalLauncher, EmrLauncher, or a test's fake)."""

    keeps_earlier_reports: bool

    def prepare(self) -> None: ...

    def run(self, spec: BatchSpec, record: Location, store: MarkerStore, status: Status, progress: Progress,
            with_credentials: bool = True) -> BatchOutcome: ...

    def finish(self, success: bool) -> None: ...

    def terminate_created_cluster(self) -> None: ...


LAUNCHERS: Dict[str, Callable[[Context], Launcher]] = {"local": LocalLauncher, "emr": EmrLauncher}


def make_launcher(ctx: Context) -> Launcher:
    """The launcher of --runner; tests replace an entry of LAUNCHERS with a fake."""
    return LAUNCHERS[ctx.params.runner](ctx)
