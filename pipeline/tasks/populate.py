"""PopulateManifest and the tasks of its graph: thin Luigi tasks over orchestration/.

    PopulateManifest --> RunBatch (one per batch, oldest first) --> EnumerateRuns --> ValidateConfigs

Validation and enumeration happen while Luigi schedules (a bad input fails there, before any AWS call, with exit
35); their tasks then show the outcome. Each batch's outputs are its runs' markers.
"""
from __future__ import annotations

import logging
import os
import time

import luigi

from pipeline.orchestration.accounts import aws_facts
from pipeline.orchestration.backfill import Backfill, open_backfill
from pipeline.orchestration.lifecycle import Populate
from pipeline.orchestration.plan import make_plan
from pipeline.reports.dry_run import dry_run
from pipeline.reports.estimate import Prices
from pipeline.reports.iam_policy import iam_policies, with_policies
from pipeline.reports.results import collect
from pipeline.reports.summary import after_run
from pipeline.rules.errors import AwsRefused, PipelineError, aws_errors
from spark.errors import one_line

from .command import BackfillCommand, BackfillTask, stop_starting_batches
from .targets import record_target

log = logging.getLogger("manifest.tasks")


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
        try:
            self.owner.run_batch(batch, index, self.status())
        except AwsRefused:  # every later batch would meet it: none starts
            stop_starting_batches(self.owner.pid)
            raise


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
        if plan.batches:
            self.start(owner)
        return batch_tasks(owner, ImportBatch if self.method == "import" else RunBatch)

    def run(self):
        owner = self.open()
        plan = owner.plan
        if self.dry_run:
            emr = owner.context.emr if self.runner == "emr" else None
            counted = owner.count_events(self.set_status_message) if self.count_events else None
            text, data = dry_run(plan, counted_events=counted, prices=Prices.from_mapping(dict(owner.params.pricing)),
                                 emr=emr)
            policies = iam_policies(owner.context, "populate", aws_facts(owner.context), self.count_events)
            self.report(with_policies(text, data, policies), data, self.output_json)
            return
        data = self._summarise(owner)
        if plan.batches and not data.get("runs_left"):
            self.finish(owner)

    def _summarise(self, owner: Backfill) -> dict:
        """The summary on the console (and --output-json), then kept beside the markers (best effort: where AWS
        refuses that, the console still has it)."""
        refusal = owner.standing.refusal
        with aws_errors():
            done_now, reasons = collect(owner.plan, refusal)
        text, data = after_run(owner.plan, owner.started, done_now, reasons, stopped=refusal)
        self._summarised = True
        self.report(text, data, self.output_json)
        store = owner.context.store
        stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(owner.started))
        where = store.summary(f"{stamp}-{os.getpid()}")  # two backfills never share a summary
        try:
            with aws_errors():
                store.write_json(where, data)
        except PipelineError as e:
            log.warning("the summary is not kept in %s: %s", where.uri,
                        "AWS refused that too" if refusal and isinstance(e, AwsRefused) else str(e))
        return data

    def at_exit(self, owner: Backfill) -> None:
        """Luigi never runs this task when a batch failed, and a failed backfill needs its summary most."""
        if not self._summarised and owner.standing.failed_batches.value:
            try:
                self._summarise(owner)
            except Exception as e:  # noqa: BLE001 - best effort while exiting: say so, never mask the exit code
                log.warning("no summary written: %s", one_line(e))
        super().at_exit(owner)
