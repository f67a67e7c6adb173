"""CleanManifest and VerifyManifest through the real `luigi` command, pyspark's spark-submit and the moto server.

Every spark-submit costs ~25 s here, so the tests share one populated backfill (populated once per module) and each
test leaves it as it found it, checking that first. Expectations come from the archive generator's ground truth.
"""
import json
import time

import boto3
import pytest

from bench import servers
from pipeline.stores.markers import MarkerStore
from pipeline.stores.records import cleaned_store, verified_store
from spark import maintenance as mt
from spark.storage import parse_location
from tests.cli import (
    ARCHIVE,
    SCHEDULING_ERROR,
    TASK_FAILED,
    last_error,
    luigi_env,
    make_archive,
    ops_objects,
    populate_command,
    run_in_process,
    run_luigi,
    storage_config,
    table_items,
)

MARKERS, TABLE = "s3://ops/markers", "manifest"


@pytest.fixture(scope="module")
def world(moto_endpoint, tmp_path_factory):
    """Three runs (the later ones repeating some events of the earlier ones), populated into the table."""
    servers.reset_moto(moto_endpoint)
    runs, truth = make_archive(3, 60, malformed_fraction=0.005, cross_run_duplicates=0.05, seed=23)
    tmp = tmp_path_factory.mktemp("maintenance")
    storage = storage_config(tmp / "dynamodb.json", TABLE)
    env = luigi_env(moto_endpoint)

    def luigi(task, *args, process: bool = True):
        """The command; in this process where no job runs (its exit code and lines are the same)."""
        command = populate_command(ARCHIVE, storage, MARKERS, *args, task=task)
        return run_luigi(command, tmp, env) if process else run_in_process(command)

    first = luigi("PopulateManifest", "--create-table", "--batch-size", "3", "--max-write-capacity", "500")
    assert first.returncode == 0, first.stderr[-3000:]
    populated = table_items(TABLE)
    assert populated == truth.expected_items(now=time.time())
    return runs, truth, populated, luigi, tmp


def store() -> MarkerStore:
    return MarkerStore(parse_location(MARKERS), TABLE)


def record(kind: str, run: str) -> dict:
    """The run's clean or verify record (None when absent)."""
    records = (cleaned_store if kind == "clean" else verified_store)(store())
    return records.read_json(records.marker(run))


def unique_keys(truth, run: str, others) -> set:
    """The run's keys that no other run holds: deleting one affects this run alone."""
    theirs = set().union(*(truth.run(r).unique_keys for r in others))
    return truth.run(run).unique_keys - theirs


@pytest.mark.parametrize("task,args,message", [
    ("CleanManifest", ["--runs", "2026-13-01-00-00-00"], "--runs: '2026-13-01-00-00-00' is not a run id"),
    ("CleanManifest", ["--runs", "{0},run=x"], "--runs: 'run=x' is not a run id"),
    ("CleanManifest", ["--since", "{2}", "--until", "{0}"], "--until {0} is before --since {2}"),
    ("CleanManifest", ["--runs", "{0},2020-01-01-00-00-00"],
     f"--runs: not in the enriched archive {ARCHIVE}, so cannot be read: 2020-01-01-00-00-00"),
    ("CleanManifest", [], "CleanManifest needs --runs, or --since and/or --until"),
    ("CleanManifest", ["--runs", "{0}", "--since", "{0}"], "do not combine it with --since or --until"),
    ("VerifyManifest", ["--until", "2026-02-30"], "--until '2026-02-30' is not a date"),
    ("VerifyManifest", ["--runs", "2020-01-01-00-00-00"], "--runs: not in the enriched archive"),
    ("VerifyManifest", ["--sample", "-1"], "--sample must be 0 (every key) or more, not -1"),
])
def test_bad_input_is_one_line_and_nothing_written(world, task, args, message):
    runs, _, populated, luigi, _ = world
    before = ops_objects()
    proc = luigi(task, *[a.format(*runs) for a in args], process=False)
    assert proc.returncode == SCHEDULING_ERROR, proc.stderr[-2000:]
    assert last_error(proc).startswith("ERROR: ") and message.format(*runs) in last_error(proc), last_error(proc)
    assert "Traceback" not in proc.stderr and "spark:" not in proc.stderr
    assert ops_objects() == before and table_items(TABLE) == populated


def test_verify_passes_then_names_the_run_and_count_of_missing_items(world, tmp_path):
    runs, truth, populated, luigi, _ = world
    assert table_items(TABLE) == populated and store().done_runs() == set(runs)

    out = tmp_path / "verify.json"
    passed = luigi("VerifyManifest", "--output-json", str(out))  # default: every marked run
    assert passed.returncode == 0, passed.stderr[-3000:]
    assert "none missing" in passed.stdout
    assert table_items(TABLE) == populated  # reads only
    results = json.loads(out.read_text())["runs"]
    assert set(results) == set(runs)
    for run in runs:
        assert results[run]["found"] == len(truth.run(run).unique_keys) and results[run]["missing"] == 0
        assert record("verify", run)["report"]["counts"]["found"] == len(truth.run(run).unique_keys)

    # Delete three of the middle run's own items by hand: two of its --sample 5 (seed 0) and one outside it.
    victim = runs[1]
    own = unique_keys(truth, victim, [runs[0], runs[2]])
    order = sorted(truth.run(victim).unique_keys, key=lambda k: mt.sample_hash(0, victim, *k))
    sampled, rest = order[:5], order[5:]
    gone = [k for k in sampled if k in own][:2] + [k for k in rest if k in own][:1]
    assert len(gone) == 3
    ddb = boto3.client("dynamodb")
    for event_id, fingerprint in gone:
        ddb.delete_item(TableName=TABLE, Key={"eventId": {"S": event_id}, "fingerprint": {"S": fingerprint}})

    full = luigi("VerifyManifest")
    assert full.returncode == TASK_FAILED, full.stderr[-3000:]
    assert last_error(full).startswith(f"ERROR: manifest {TABLE}: items missing in 1 of 3 runs: run {victim}: "
                                      "3 missing"), last_error(full)
    assert {e.split(":")[0] for e in record("verify", victim)["report"]["missing_examples"]} == \
        {f"{e} {f}" for e, f in gone}

    sample = luigi("VerifyManifest", "--sample", "5")
    assert sample.returncode == TASK_FAILED, sample.stderr[-3000:]
    assert f"run {victim}: 2 missing" in last_error(sample) and "1 of 3 runs" in last_error(sample), last_error(sample)
    for run in runs:
        report = record("verify", run)["report"]
        counts = report["counts"]
        assert report["sample"] == {"size": 5, "seed": 0}
        assert counts["found"] + counts["missing"] == 5
        assert counts["not_sampled"] == len(truth.run(run).unique_keys) - 5
    assert sorted(e.split(":")[0] for e in record("verify", victim)["report"]["missing_examples"]) == \
        sorted(f"{e} {f}" for e, f in gone[:2])

    for key in gone:  # leave the backfill as it was found
        ddb.put_item(TableName=TABLE, Item={"eventId": {"S": key[0]}, "fingerprint": {"S": key[1]},
                                            "etlTime": {"N": str(populated[key][0])},
                                            "ttl": {"N": str(populated[key][1])}})
    assert table_items(TABLE) == populated


def test_clean_undoes_one_run_and_populate_writes_it_again(world):
    runs, truth, populated, luigi, _ = world
    assert table_items(TABLE) == populated and store().done_runs() == set(runs)
    target, earlier = runs[2], runs[:2]
    own = unique_keys(truth, target, earlier)
    shared = truth.run(target).unique_keys - own
    assert own and shared, "the last run must hold events of earlier runs"

    cleaned = luigi("CleanManifest", "--runs", target)
    assert cleaned.returncode == 0, cleaned.stderr[-3000:]
    items = table_items(TABLE)
    assert items == truth.expected_items(now=time.time(), runs=earlier)  # the other runs' items are untouched
    assert not own & set(items)
    assert all(items[k] == populated[k] and items[k][0] < truth.run(target).etl_ms // 1000 for k in shared)
    assert store().done_runs() == set(earlier)
    counts = record("clean", target)["report"]["counts"]
    assert (counts["deleted"], counts["kept_older"], counts["not_present"]) == (len(own), len(shared), 0)
    assert f"run={target}: {len(own)} deleted, 0 not present, {len(shared)} kept (older etlTime)" in cleaned.stdout

    again = luigi("CleanManifest", "--runs", target, process=False)  # resume: a cleaned run is not cleaned twice
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 runs cleaned now, 1 already clean" in again.stdout and "spark:" not in again.stderr
    assert table_items(TABLE) == items

    repopulated = luigi("PopulateManifest", "--max-write-capacity", "500")
    assert repopulated.returncode == 0, repopulated.stderr[-3000:]
    assert table_items(TABLE) == populated
    assert store().done_runs() == set(runs)
    assert record("clean", target) is None  # written again: no longer a cleaned run
