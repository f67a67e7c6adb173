"""One backfill (or clean, or verify) as this process knows it: its settings, plan, launcher and standing.

The Luigi tasks stay thin: the top task opens its backfill here once, and every task of it (validation,
enumeration, each batch) finds it again by its key, which is the only backfill-wide parameter a batch carries. The
key is a digest of every setting, so batches of two different backfills never share a Luigi task id, and two
processes running the same command agree on every id (luigid runs each batch once).

Luigi runs tasks in forked processes when --workers > 1: the standing counters live in shared memory, made
before any fork, so every batch's status tells where the whole backfill stands, and a refusal met by one batch
keeps every later batch from starting: AWS would refuse it alike.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

from pipeline.configs.params import Params
from pipeline.rules.batches import Batch
from pipeline.rules.errors import AwsRefused, PipelineError, aws_errors
from pipeline.rules.text import duration
from pipeline.runners.outcome import Status
from spark import storage
from spark.refusals import MAX_REFUSAL
from spark.storage import Location

from . import importing, lifecycle
from .context import Context, load_context
from .launch import Launcher, make_launcher

log = logging.getLogger("manifest.backfill")

Planner = Callable[[Context], object]  # returns a Plan or a MaintenancePlan: batches, budget, outcome()

# What a finished run adds to the standing line, per mode: the report count, and its words.
TALLIES = {"populate": ("written", "items written"), "clean": ("deleted", "items deleted"),
           "verify": ("found", "items found"), "import": ("written", "items staged")}


class NotStarted(PipelineError):
    """A batch that did not start because AWS refused an earlier one (run the command again once fixed)."""


class Standing:
    """Shared counters of one backfill's progress in this process and the Luigi workers it forks."""

    def __init__(self):
        self.runs = multiprocessing.Value("q", 0)
        self.items = multiprocessing.Value("q", 0)
        self.events = multiprocessing.Value("q", 0)  # estimated events of the batches finished
        self.failed_batches = multiprocessing.Value("i", 0)
        self.shown = multiprocessing.Array("b", 4)  # validation and enumeration reported (Backfill.SHOWN)
        self._refusal = multiprocessing.Array("c", 4 * MAX_REFUSAL)  # the first refusal's line, UTF-8

    def add(self, runs: int, items: int, events: int) -> None:
        for value, amount in ((self.runs, runs), (self.items, items), (self.events, events)):
            with value.get_lock():
                value.value += amount

    @property
    def refusal(self) -> str:
        """The line of the first AWS refusal a batch met ('' while none has)."""
        return self._refusal.value.decode("utf-8", "replace")

    def refuse(self, line: str) -> None:
        with self._refusal.get_lock():
            if not self._refusal.value:
                self._refusal.value = line.encode("utf-8")[: len(self._refusal) - 1]


class Backfill:
    SHOWN = ("validated", "enumerated")

    def __init__(self, key: str, params: Params, mode, planner: Planner):
        self.key, self.params, self.mode, self.planner = key, params, mode, planner
        self.standing = Standing()
        self.started = time.time()
        self.pid = os.getpid()  # the process that plans it: Luigi's worker, whatever forks run its batches
        self._context: Optional[Context] = None
        self._plan = None
        self._launcher: Optional[Launcher] = None

    @property
    def context(self) -> Context:
        """Checked parameters and validated configs: no AWS call before both are valid."""
        if self._context is None:
            self._context = load_context(self.params)
        return self._context

    @property
    def plan(self):
        if self._plan is None:
            with aws_errors():
                self._plan = self.planner(self.context)
        return self._plan

    @property
    def launcher(self) -> Launcher:
        if self._launcher is None:
            self._launcher = make_launcher(self.context)
        return self._launcher

    def prepare(self) -> None:
        """Once, before parallel batches could each create an EMR cluster."""
        with aws_errors():
            self.launcher.prepare()

    def finish(self, success: bool) -> None:
        """The runner's end: staged secrets deleted either way; a successful backfill's cluster ended too."""
        with aws_errors():
            self.launcher.finish(success)

    # -- what luigid shows --------------------------------------------------------------------------------

    def shown(self, what: str) -> bool:
        return bool(self.standing.shown[self.SHOWN.index(what)])

    def show(self, what: str) -> None:
        self.standing.shown[self.SHOWN.index(what)] = 1

    def validated(self) -> str:
        """The validation's outcome, for its task's status."""
        ctx = self.context
        return (f"storage config {self.params.storage_config}: DynamoDB table {ctx.config.table} in "
                f"{ctx.config.region}; resolver {self.params.resolver}: valid; archive {ctx.archive.uri}, "
                f"markers {ctx.store.folder.uri}")

    def batch(self, first: str, last: str, count: int) -> Tuple[int, Batch]:
        """The plan's batch with these runs, and its place (1-based)."""
        for i, batch in enumerate(self.plan.batches, 1):
            if (batch.first, batch.last, len(batch.runs)) == (first, last, count):
                return i, batch
        raise PipelineError(f"backfill {self.key} has no batch of {count} runs from {first} to {last}")

    def priority(self, index: int) -> int:
        """Oldest batches first, above every task requiring them (luigid raises a dependency's priority to its
        dependent's, never lowers it): earlier etlTimes land first, so later copies are skipped, not rewritten."""
        return len(self.plan.batches) - index + 1

    def where(self) -> str:
        """Where the whole backfill stands: runs done of all, items, and time left at the budget."""
        plan, s = self.plan, self.standing
        before = len(plan.runs_done)
        total = before + sum(len(b.runs) for b in plan.batches)
        line = (f"{before + s.runs.value:,} of {total:,} runs done, {s.items.value:,} "
                f"{TALLIES[self.mode.name][1]}")
        if plan.events_todo and plan.budget > 0:
            left = max(0, plan.events_todo - s.events.value) / plan.budget
            line += f", {duration(left)} left at {plan.budget:,.0f} WCU/s"
        return line

    # -- running a batch ----------------------------------------------------------------------------------

    def run_batch(self, batch: Batch, index: int, status: Status) -> List[dict]:
        """One batch's lifecycle; its finished runs counted in the standing line. After an AWS refusal, no batch
        starts: it raises NotStarted at once."""
        plan = self.plan
        label = f"batch {index} of {len(plan.batches)}, {batch.describe()}"
        told = Status(lambda m: status.message(f"{m}\n{label}; backfill: {self.where()}"), status.percentage,
                      status.tracking_url)
        try:
            if self.standing.refusal:
                raise NotStarted(f"batch {batch.id} not started: AWS refused an earlier batch's request")
            with aws_errors():
                if self.params.method == "import":
                    reports = importing.run_import(self.context, self.launcher, batch, told)
                else:
                    reports = lifecycle.run_batch(self.context, self.launcher, batch, self.mode, plan.batch_budget,
                                                  told)
        except BaseException as e:
            if isinstance(e, AwsRefused):
                self.standing.refuse(str(e))
            with self.standing.failed_batches.get_lock():
                self.standing.failed_batches.value += 1
            raise
        key = TALLIES[self.mode.name][0]
        self.standing.add(len(reports), sum(r["counts"].get(key, 0) for r in reports), batch.events)
        return reports


    # -- the dry run's count ------------------------------------------------------------------------------

    def count_events(self, message: Callable[[str], None]) -> Dict[str, int]:
        """--count-events: one count-only Spark pass over the runs to do, which writes nothing to the table; its
        spec and reports live in a temporary folder (in `_staging/` for EMR, deleted after reading)."""
        plan, ctx = self.plan, self.context
        if not plan.runs_todo:
            return {}
        batch_id = "count-" + hashlib.sha256(" ".join(plan.runs_todo).encode()).hexdigest()[:12]
        with aws_errors():
            if ctx.params.runner != "emr":
                with tempfile.TemporaryDirectory(prefix="manifest-count-") as tmp:
                    return self._count(batch_id, storage.parse_location(tmp), message)
            folder = ctx.store.staging().child("counts", batch_id)  # the step's name comes from the runs: a dry
            try:  # run repeated while its step still runs adopts it
                return self._count(batch_id, folder, message)
            finally:
                storage.delete_all(folder, ctx.store.client)
                self.launcher.terminate_created_cluster()

    def _count(self, batch_id: str, folder: Location, message: Callable[[str], None]) -> Dict[str, int]:
        ctx, todo = self.context, self.plan.runs_todo
        reports = folder.child("reports")
        spec = lifecycle.build_spec(ctx, "populate", batch_id, todo, reports.uri, count_only=True)
        outcome = lifecycle.run_job(ctx, self.launcher, spec, folder.child("spec.json"), Status(message),
                                    with_credentials=False)
        counted = {run: rep["valid_events"] for run, rep in
                   lifecycle.read_reports(ctx.store, reports, todo).items() if rep is not None}
        if not outcome.ok:
            log.warning("the count job failed (%s): %d of %d runs counted", outcome.detail, len(counted), len(todo))
        return counted


_OPEN: Dict[str, Backfill] = {}


def open_backfill(params: Params, mode, planner: Planner, selection: str = "") -> Backfill:
    """This process's backfill for these settings, made once (`selection`: what else picks its runs)."""
    key = hashlib.sha1(repr((params, mode, selection)).encode()).hexdigest()[:12]
    if key not in _OPEN:
        _OPEN[key] = Backfill(key, params, mode, planner)
    return _OPEN[key]


def close_all() -> None:
    """Forget every backfill opened here: a process runs one command, and a program that runs several in turn
    (the tests) starts each anew, its plan and standing included."""
    _OPEN.clear()


def find(key: str) -> Backfill:
    """The backfill a task belongs to; only the process that planned it can run its tasks."""
    try:
        return _OPEN[key]
    except KeyError:
        raise PipelineError(f"backfill {key} was not planned by this process: start its PopulateManifest, "
                            "CleanManifest or VerifyManifest command, which plans it and runs its batches") from None
