"""In-process Luigi graphs: `luigi.build` with a local scheduler, the moto server, and a fake launcher in place of
Spark, so the pipeline's tasks, targets and batch lifecycle are tested without a JVM or a subprocess."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set

import boto3
import luigi
from luigi.execution_summary import LuigiStatusCode

from pipeline.orchestration import launch
from pipeline.runners.outcome import BatchOutcome
from spark import storage
from spark.report import new_report
from spark.spec import BatchSpec
from tests.cli import EXAMPLES, storage_config

EVENTS = 10  # each run of `archive_of` holds this many events, as the plan estimates them from bytes
RUN_BYTES = EVENTS * 1300  # sizing.AVG_LINE_BYTES a line, plain


def archive_of(runs: List[str], bucket: str = "archive", prefix: str = "enriched") -> str:
    """An S3 archive whose runs the plan sizes at EVENTS events each (the fake launcher never reads them)."""
    s3 = boto3.client("s3")
    for name in (bucket, "ops"):
        s3.create_bucket(Bucket=name)
    for run in runs:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/run={run}/part-00000", Body=b"x" * RUN_BYTES)
    return f"s3://{bucket}/{prefix}"


@dataclass
class FakeLauncher:
    """Plays the Spark job: for each run of a spec, the report the real job would write (complete, unless the run
    is in `fail`), and remembers every spec it was given."""

    fail: Set[str] = field(default_factory=set)
    exit_ok: bool = True
    specs: List[BatchSpec] = field(default_factory=list)
    before_reports: Optional[Callable[[BatchSpec], None]] = None
    keeps_earlier_reports = False

    def prepare(self) -> None:
        pass

    def run(self, spec: BatchSpec, record, store, status, progress, with_credentials: bool = True) -> BatchOutcome:
        self.specs.append(spec)
        store.write_json(record, json.loads(spec.to_json()))
        progress("starting the fake job", 0.0)
        if self.before_reports:
            self.before_reports(spec)
        folder = storage.parse_location(spec.reports)
        for run in spec.runs:
            report = new_report(run, spec.batch_id, spec.mode)
            counts = report["counts"]
            outcome = {"populate": "written", "import": "written", "clean": "deleted", "verify": "found"}[spec.mode]
            counts["lines"] = EVENTS
            if run in self.fail:
                counts["write_failures" if spec.mode == "populate" else outcome] = EVENTS
            else:
                counts[outcome] = EVENTS
            report["count_only"] = spec.count_only
            report["valid_events"] = EVENTS
            storage.write_bytes(folder.child(f"run={run}.json"), json.dumps(report).encode(), store.client)
            progress(f"run {run} done", 100.0 * (spec.runs.index(run) + 1) / len(spec.runs))
        detail = "fake job exited 0" if self.exit_ok else "fake job exited 1"
        return BatchOutcome(ok=self.exit_ok and not self.fail & set(spec.runs), detail=detail, job_id="fake")

    def finish(self, success: bool) -> None:
        pass

    def terminate_created_cluster(self) -> None:
        pass


def use_fake(monkeypatch, fake: FakeLauncher) -> FakeLauncher:
    monkeypatch.setitem(launch.LAUNCHERS, "local", lambda ctx: fake)
    return fake


def command_args(tmp_path, archive: str, markers: str = "s3://ops/markers", table: str = "manifest",
                 **extra) -> Dict:
    """The parameters of a command as `luigi --module pipeline ...` would give them."""
    return dict(enriched_archive=archive, storage_config=storage_config(tmp_path / f"{table}.json", table),
                resolver=str(EXAMPLES / "resolver.json"), markers=markers, **extra)


def build(*tasks: luigi.Task, workers: int = 1) -> LuigiStatusCode:
    return luigi.build(list(tasks), local_scheduler=True, workers=workers, detailed_summary=True).status
