"""The Luigi graph in-process: tasks, targets, priorities and the one batch lifecycle, with a fake launcher."""
from __future__ import annotations

import boto3
import pytest
from luigi.execution_summary import LuigiStatusCode

from pipeline.orchestration import context
from pipeline.rules.errors import PipelineError
from pipeline.runners.outcome import Status
from pipeline.stores.markers import MarkerStore
from pipeline.stores.records import cleaned_store, verified_store
from pipeline.tasks.maintenance import CleanManifest, VerifyManifest
from pipeline.tasks.populate import EnumerateRuns, PopulateManifest, RunBatch, ValidateConfigs
from spark import storage
from spark.storage import parse_location
from tests.cli import recent_runs
from tests.graph import EVENTS, FakeLauncher, archive_of, build, command_args, use_fake

# 10 events a run at 1 WCU/s: a batch of 20 s of writing holds 2 runs.
SMALL = dict(max_write_capacity=1.0, batch_minutes=20 / 60, create_table=True)


@pytest.fixture
def world(moto_reset, tmp_path, monkeypatch):
    runs = recent_runs(6)
    archive = archive_of(runs)
    fake = use_fake(monkeypatch, FakeLauncher())
    return runs, archive, fake, tmp_path


def markers(table: str = "manifest") -> MarkerStore:
    return MarkerStore(parse_location("s3://ops/markers"), table)


def test_batches_are_sized_by_work_run_oldest_first_and_mark_only_what_reports_prove(world):
    runs, archive, fake, tmp_path = world
    assert build(PopulateManifest(**command_args(tmp_path, archive, **SMALL))) == LuigiStatusCode.SUCCESS
    assert [s.runs for s in fake.specs] == [runs[0:2], runs[2:4], runs[4:6]]  # oldest first, 2 runs of work each
    assert markers().done_runs() == set(runs)
    assert all(markers().read_marker(r)["report"]["counts"]["written"] == EVENTS for r in runs)
    fake.specs.clear()
    assert build(PopulateManifest(**command_args(tmp_path, archive, **SMALL))) == LuigiStatusCode.SUCCESS
    assert fake.specs == []  # every batch's outputs exist: nothing runs


def test_a_run_its_report_does_not_prove_stays_unmarked_and_the_batch_fails_naming_it(world):
    runs, archive, fake, tmp_path = world
    fake.fail = {runs[3]}
    status = build(PopulateManifest(**command_args(tmp_path, archive, **SMALL)))
    assert status == LuigiStatusCode.FAILED
    assert markers().done_runs() == set(runs) - {runs[3]}  # the later batch still ran
    fake.fail, fake.specs = set(), []
    assert build(PopulateManifest(**command_args(tmp_path, archive, **SMALL))) == LuigiStatusCode.SUCCESS
    assert [s.runs for s in fake.specs] == [[runs[3]]]  # the resume does only what is left


def test_batch_failure_is_one_line_naming_the_unproven_runs(world):
    runs, archive, fake, tmp_path = world
    fake.fail = {runs[1]}
    owner = open_populate(tmp_path, archive)
    index, batch = owner.batch(runs[0], runs[1], 2)
    with pytest.raises(PipelineError) as failure:
        owner.run_batch(batch, index, Status())
    message = str(failure.value)
    assert "\n" not in message and f"run {runs[1]}: 10 write failures, 0 events not written" in message
    assert message.startswith(f"batch {batch.id}: 1 of 2 runs not marked (fake job exited 0)")
    assert owner.standing.failed_batches.value == 1


def open_populate(tmp_path, archive, **extra):
    task = PopulateManifest(**command_args(tmp_path, archive, **dict(SMALL, **extra)))
    return task.open()


def test_batch_tasks_show_their_runs_few_parameters_and_priorities_falling_with_time(world):
    runs, archive, fake, tmp_path = world
    top = PopulateManifest(**command_args(tmp_path, archive, **SMALL))
    batches = top.requires()
    assert [(b.first_run, b.last_run, b.runs) for b in batches] == [(runs[0], runs[1], 2), (runs[2], runs[3], 2),
                                                                   (runs[4], runs[5], 2)]
    for batch in batches:
        shown = batch.to_str_params(only_significant=True, only_public=True)
        assert set(shown) == {"backfill", "first_run", "last_run", "runs"} and len(shown) <= 8
    priorities = [b.priority for b in batches]
    assert priorities == sorted(priorities, reverse=True) and min(priorities) > top.priority  # above their requirer
    assert batches[0].requires() == EnumerateRuns(backfill=top.open().key)
    assert EnumerateRuns(backfill=top.open().key).requires() == ValidateConfigs(backfill=top.open().key)


def test_another_archive_table_or_markers_never_shares_a_batch_id(world, tmp_path):
    runs, archive, fake, _ = world
    ids = set()
    for changes in ({}, {"markers": "s3://ops/other"}, {"table": "another"}):
        args = command_args(tmp_path, archive, **{k: v for k, v in changes.items() if k == "markers"},
                            table=changes.get("table", "manifest"))
        ids |= {b.task_id for b in PopulateManifest(**args, **SMALL).requires()}
    assert len(ids) == 9


def test_outputs_are_the_runs_markers_decided_from_one_listing(world, monkeypatch):
    runs, archive, fake, tmp_path = world
    top = PopulateManifest(**command_args(tmp_path, archive, **SMALL))
    batches = top.requires()
    assert [t.path for b in batches for t in b.output()] == \
        [f"s3://ops/markers/manifest/run={r}.json" for r in runs]
    store = markers()
    store.mark(runs[0], {"counts": {}})
    store.mark(runs[1], {"counts": {}})
    listings = []
    real = storage.list_objects
    monkeypatch.setattr(storage, "list_objects", lambda *a, **k: listings.append(a[0].uri) or real(*a, **k))
    assert [b.complete() for b in batches] == [True, False, False]
    assert listings == ["s3://ops/markers/manifest"]  # one listing answers every target


def test_configs_are_validated_once_per_process(world, monkeypatch):
    runs, archive, fake, tmp_path = world
    calls = []
    real = context.load_config_files
    monkeypatch.setattr(context, "load_config_files", lambda *a: calls.append(a) or real(*a))
    assert build(PopulateManifest(**command_args(tmp_path, archive, **SMALL))) == LuigiStatusCode.SUCCESS
    assert len(calls) == 1


def test_status_says_where_the_whole_backfill_stands(world):
    runs, archive, fake, tmp_path = world
    owner = open_populate(tmp_path, archive)
    seen = []
    for index, batch in enumerate(owner.plan.batches[:2], 1):
        owner.run_batch(batch, index, Status(message=seen.append))
    assert f"batch 1 of 3, 2 runs ({runs[0]} .. {runs[1]}); backfill: 0 of 6 runs done, 0 items written, " \
           f"1 min 00 s left at 1 WCU/s" in seen[0]
    assert any(m.startswith("starting the fake job") for m in seen)
    assert f"batch 2 of 3, 2 runs ({runs[2]} .. {runs[3]}); backfill: 2 of 6 runs done, 20 items written, 40 s " \
           "left at 1 WCU/s" in seen[-1]


def test_runs_marked_meanwhile_by_another_process_are_left_out(world):
    runs, archive, fake, tmp_path = world
    owner = open_populate(tmp_path, archive)
    index, batch = owner.batch(runs[0], runs[1], 2)
    markers().mark(runs[0], {"counts": {}})  # after planning, before the batch takes its leases
    owner.run_batch(batch, index, Status())
    assert [s.runs for s in fake.specs] == [[runs[1]]]


def test_bad_input_fails_while_scheduling_before_any_aws_call(world):
    runs, archive, fake, tmp_path = world
    before = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
    status = build(PopulateManifest(**command_args(tmp_path, archive, since="yesterday", **SMALL)))
    assert status == LuigiStatusCode.SCHEDULING_FAILED
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []
    assert [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]] == before
    assert fake.specs == []


def test_dry_run_shows_validation_and_enumeration_and_writes_nothing(world, capsys):
    runs, archive, fake, tmp_path = world
    assert build(PopulateManifest(**command_args(tmp_path, archive, dry_run=True, **SMALL))) == \
        LuigiStatusCode.SUCCESS
    out = capsys.readouterr().out
    assert "Batches (3, up to 0.333333 min of writing or 1,000 runs each; each starts in ~7 s, 21 s in all):" in out
    assert "A kill loses at most one batch: ~20 s of writing, done again on resume." in out
    assert fake.specs == [] and boto3.client("dynamodb").list_tables()["TableNames"] == []


def test_clean_then_verify_select_their_runs_and_record_them(world):
    runs, archive, fake, tmp_path = world
    assert build(PopulateManifest(**command_args(tmp_path, archive, **SMALL))) == LuigiStatusCode.SUCCESS
    fake.specs.clear()
    clean = CleanManifest(**command_args(tmp_path, archive, runs=f"{runs[1]},{runs[4]}"))
    assert build(clean) == LuigiStatusCode.SUCCESS
    assert [(s.mode, s.runs) for s in fake.specs] == [("clean", [runs[1], runs[4]])]
    assert markers().done_runs() == set(runs) - {runs[1], runs[4]}
    assert cleaned_store(markers()).done_runs() == {runs[1], runs[4]}
    assert build(CleanManifest(**command_args(tmp_path, archive, runs=runs[1]))) == LuigiStatusCode.SUCCESS
    assert len(fake.specs) == 1  # already clean: no job
    fake.specs.clear()
    assert build(VerifyManifest(**command_args(tmp_path, archive, since=runs[3]))) == LuigiStatusCode.SUCCESS
    assert [(s.mode, s.runs) for s in fake.specs] == [("verify", [runs[3], runs[5]])]  # marked runs only
    assert verified_store(markers()).done_runs() == {runs[3], runs[5]}
    assert build(PopulateManifest(**command_args(tmp_path, archive, **SMALL))) == LuigiStatusCode.SUCCESS
    assert cleaned_store(markers()).done_runs() == set()  # written again: no longer cleaned


def test_a_batch_outside_the_process_that_planned_it_is_refused(world):
    with pytest.raises(PipelineError, match="was not planned by this process"):
        RunBatch(backfill="0123456789ab", first_run="a", last_run="b", runs=1).output()
