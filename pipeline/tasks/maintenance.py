"""CleanManifest (undo runs) and VerifyManifest (prove runs): the populator's configs, runners, budgets and markers.

Both read the runs' archive folders with the same Spark job (spark/, in mode "clean" or "verify"), so they find
exactly the keys and etlTimes a populate writes; their bookkeeping is records.py's, their plan
maintenance_plan.py's.

    CleanManifest --> CleanBatch (per batch) --> EnumerateRuns --> ValidateConfigs

Cleaning a run removes items that later runs may also rely on (their copies of the same events were "already
present", so they wrote none): populate the cleaned runs again, and VerifyManifest shows what is missing meanwhile.
"""
from __future__ import annotations

import luigi

from pipeline.orchestration.accounts import aws_facts
from pipeline.orchestration.backfill import Backfill, open_backfill
from pipeline.orchestration.lifecycle import Clean, Verify
from pipeline.orchestration.maintenance_plan import Selection, planner
from pipeline.reports import maintenance as maintenance_report
from pipeline.reports.iam_policy import iam_policies, with_policies
from pipeline.rules.errors import PipelineError, aws_errors
from pipeline.stores import records

from .command import BackfillCommand
from .populate import EnumerateRuns, RunBatch, batch_tasks
from .targets import record_target


class CleanBatch(RunBatch):
    """Deletes what its runs wrote, then removes their populate markers and records them as cleaned."""

    def output(self):
        store = self.owner.context.store
        cleaned = records.cleaned_store(store)
        return [record_target(cleaned.marker(run), lambda run=run: records.is_cleaned(store, [run], cached=True))
                for run in self.batch()[1].runs]


class VerifyBatch(RunBatch):
    """Checks its runs' items and records each run's verification, missing items included: VerifyManifest judges."""

    def output(self):
        owner = self.owner
        store, batch = owner.context.store, self.batch()[1]
        verified = records.verified_store(store)
        return [record_target(verified.marker(run), lambda run=run: not owner.mode.todo(store, [run], batch.id))
                for run in batch.runs]


class Maintenance(BackfillCommand):
    """What CleanManifest and VerifyManifest share: run selection, the plan, EMR, the JSON output."""

    runs = luigi.Parameter(default="", description="run ids, comma-separated (instead of --since/--until)")
    until = luigi.Parameter(default="", description="last run (inclusive): YYYY-MM-DD or YYYY-MM-DD-HH-mm-ss")
    output_json = luigi.Parameter(default="", description="also write the per-run results (or the dry run) as JSON")
    dry_run = luigi.BoolParameter(default=False, description="plan and print the IAM policies, write nothing")

    def selection(self) -> Selection:
        raise NotImplementedError

    def mode(self):
        raise NotImplementedError

    def open(self) -> Backfill:
        """The populator's parameters; its write mode is no concern here (fast mode refuses parallel batches)."""
        sel = self.selection()
        params = self.params().replace(write_mode="conditional", dry_run=self.dry_run)
        return open_backfill(params, self.mode(), planner(sel), repr(sel))

    def requires(self):
        owner = self.open()
        if self.dry_run:
            return EnumerateRuns(backfill=owner.key)
        if owner.plan.batches:
            self.start(owner)
        return batch_tasks(owner, CleanBatch if self.mode().name == "clean" else VerifyBatch)

    def report_dry_run(self, owner: Backfill) -> None:
        """--dry-run: the plan and the IAM policies the command needs; nothing is submitted or written."""
        text, data = maintenance_report.maintenance_dry_run(owner.plan)
        policies = iam_policies(owner.context, self.mode().name, aws_facts(owner.context))
        self.report(with_policies(text, data, policies), data, self.output_json)

    def conclude(self, owner: Backfill, text: str, data: dict) -> None:
        if owner.plan.batches:
            self.finish(owner)
        self.report(text, data, self.output_json)


class CleanManifest(Maintenance):
    """Delete the items given runs wrote (etlTime equal to theirs) and unmark them, so they can be written again."""

    def selection(self) -> Selection:
        return Selection("clean", self.runs, self.until)

    def mode(self):
        return Clean()

    def run(self):
        owner = self.open()
        if self.dry_run:
            return self.report_dry_run(owner)
        with aws_errors():
            found = maintenance_report.clean_records(owner.plan)
        text, data = maintenance_report.clean_report(owner.plan, found)
        self.conclude(owner, text, data)


class VerifyManifest(Maintenance):
    """Check that the items of given runs (default: every marked run) are in the table; fails if any is missing."""

    max_read_capacity = luigi.FloatParameter(default=0.0, description="RCU/s for the whole verify; 0 = automatic")
    sample = luigi.IntParameter(default=0, description="check this many keys per run, drawn at random; 0 = all")
    sample_seed = luigi.IntParameter(default=0, description="another seed draws another sample")
    resume = luigi.BoolParameter(default=False, description="skip runs whose last verification still holds")

    def selection(self) -> Selection:
        return Selection("verify", self.runs, self.until, self.max_read_capacity, self.sample)

    def mode(self):
        return Verify(self.sample, self.sample_seed, self.resume)

    def run(self):
        owner = self.open()
        if self.dry_run:
            return self.report_dry_run(owner)
        with aws_errors():
            found, held = maintenance_report.verify_records(owner.plan, self.sample, self.sample_seed, self.resume)
        text, data, error = maintenance_report.verify_report(owner.plan, found, held, self.sample, self.sample_seed)
        self.conclude(owner, text, data)
        if error:
            raise PipelineError(error)
