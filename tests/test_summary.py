"""The operator's reports: dry run (text and JSON), after-run summary. No AWS except one moto test."""
from __future__ import annotations

import json
import time

import boto3
import pytest
from moto import mock_aws

from pipeline.configs.params import Params
from pipeline.configs.storage_config import StorageConfig
from pipeline.orchestration.context import Context
from pipeline.orchestration.plan import Plan
from pipeline.reports import dry_run, summary
from pipeline.reports.estimate import Prices
from pipeline.reports.results import collect
from pipeline.rules import batches
from pipeline.rules import text as fmt
from pipeline.stores import listing
from pipeline.stores.markers import MarkerStore
from pipeline.stores.table import TableInfo
from spark.report import new_report
from spark.storage import parse_location

RUNS = ["2021-03-01-00-00-00", "2021-03-02-00-00-00", "2021-03-03-00-00-00"]
DONE = "2021-02-28-00-00-00"
CONFIG = StorageConfig(name="manifest", table="manifest-table", region="eu-west-1", id=None,
                       schema="iglu:com.snowplowanalytics.snowplow.storage/amazon_dynamodb_config/jsonschema/2-0-0")


def make_plan(archive: str, markers: str, todo=RUNS, done=(DONE,), skipped=(), batch_size=2, since=None,
              billing="PROVISIONED", ttl=True, unreadable=()) -> Plan:
    params = Params(enriched_archive=archive, storage_config="unused.json", resolver="unused.json", markers=markers,
                    batch_size=batch_size)
    archive_loc = parse_location(archive)
    store = MarkerStore(parse_location(markers), CONFIG.table)
    ctx = Context(params, CONFIG, archive_loc, store, since)
    info = TableInfo(CONFIG.table, CONFIG.region, billing, 1000 if billing == "PROVISIONED" else 0, ttl)
    objects = listing.survey_runs(archive_loc, list(todo))
    events = {r: objects[r].events for r in todo}
    return Plan(ctx, info, 500.0, len(todo) + len(done), list(done), list(todo), list(skipped), list(unreadable),
                batches.by_work(list(todo), events, 500.0, 10, batch_size), objects)


def batch_rows(runs_in_batches, events_per_run=8):
    return [{"id": batches.batch_id(b), "runs": b, "events": events_per_run * len(b), "start_seconds": 7.0}
            for b in runs_in_batches]


@pytest.fixture
def archive(tmp_path):
    """Each run: a 2,600-byte plain object (2 events), a 1,300-byte gzip-named one (6), and non-data objects."""
    root = tmp_path / "archive"
    for run in RUNS:
        folder = root / f"run={run}"
        folder.mkdir(parents=True)
        (folder / "part-00000").write_bytes(b"x" * 2600)
        (folder / "part-00001.gz").write_bytes(b"x" * 1300)
        (folder / "_SUCCESS").write_bytes(b"")
        (folder / "part-00002").write_bytes(b"")
    (root / "logs").mkdir()
    return str(root)


def test_dry_run_json_holds_the_plan_and_estimates(archive, tmp_path):
    skipped = [{"run": "logs", "reason": "not a run folder (expected run=YYYY-MM-DD-HH-MM-SS)"},
               {"run": "2021-01-01-00-00-00", "reason": "before --since 2021-02-01-00-00-00"}]
    plan = make_plan(archive, str(tmp_path / "markers"), skipped=skipped)
    text, data = dry_run.dry_run(plan)
    assert json.loads(json.dumps(data)) == data
    assert data["runs_to_do"] == RUNS and data["runs_done"] == [DONE] and data["runs_skipped"] == skipped
    assert data["batches"] == batch_rows([RUNS[:2], RUNS[2:]])
    assert data["kill_loses_seconds"] == pytest.approx(16 / 500, abs=0.1)
    assert (data["objects"], data["bytes"]) == (6, 3 * 3900)
    assert data["events"] == 3 * 8 and data["events_source"] == "estimated from bytes"
    assert data["per_run"][RUNS[0]] == {"objects": 2, "bytes": 3900, "events": 8,
                                        "events_source": "estimated from bytes"}
    est = data["estimates"]
    assert est["methods"]["conditional"]["wcu"] == 24 and est["methods"]["fast"]["rcu"] == 24
    assert est["methods"]["conditional"]["seconds"] == pytest.approx(24 / 500)
    assert est["methods"]["import"]["import_usd"] == pytest.approx(24 * 190 / 2**30 * 0.15)
    assert (data["billing_mode"], data["budget_wcu_per_second"]) == ("PROVISIONED", 500.0)
    assert not (tmp_path / "markers").exists()  # nothing written


def test_dry_run_text_is_a_readable_table(archive, tmp_path):
    plan = make_plan(archive, str(tmp_path / "markers"), skipped=[{"run": "logs", "reason": "not a run folder"}])
    text, _ = dry_run.dry_run(plan, emr={"core_instance_count": "2"})
    lines = text.splitlines()
    assert "manifest-table" in lines[0] and "(provisioned, 1,000 WCU)" in lines[0] and "Nothing was written" in lines[0]
    assert "3 to do in 2 batches, 1 already done, 1 skipped; 6 objects, 11.7 KB, 24 events" in lines[1]
    row = next(ln for ln in lines if ln.startswith(RUNS[1]))
    assert row.split() == [RUNS[1], "2", "3.9", "KB", "8", "~"]
    assert any(ln.split()[:4] == ["total", "6", "11.7", "KB"] for ln in lines)
    assert "  logs: not a run folder" in lines
    header = next(ln for ln in lines if "write: fast *" in ln)  # the default write mode is marked
    assert header.index("write: conditional") < header.index("write: fast") < header.index("import")
    emr = next(ln for ln in lines if ln.startswith("EMR "))
    assert emr.count("$0.18 (0.25 h)") == 3  # 3 m5.xlarge x 0.25 h x $0.24 for each method
    assert "new cluster of 1 master m5.xlarge + 2 core m5.xlarge" in text


def test_dry_run_uses_counted_events_and_says_when_partly_estimated(archive, tmp_path):
    plan = make_plan(archive, str(tmp_path / "markers"))
    _, data = dry_run.dry_run(plan, counted_events={r: 1000 for r in RUNS})
    assert data["events"] == 3000 and data["events_source"] == "counted"
    assert not any("rough" in n for n in data["estimates"]["notes"])
    text, data = dry_run.dry_run(plan, counted_events={RUNS[0]: 1000})
    assert data["events"] == 1000 + 2 * 8 and data["events_source"] == "partly estimated from bytes"
    assert data["per_run"][RUNS[0]]["events_source"] == "counted"
    assert "~ estimated from bytes (rough)" in text


def test_dry_run_prices_and_unknown_instance_types(archive, tmp_path):
    plan = make_plan(archive, str(tmp_path / "markers"), billing="PAY_PER_REQUEST")
    prices = Prices(on_demand_write_per_million=1e6)  # $1 per write: the figures become readable
    text, data = dry_run.dry_run(plan, prices=prices, emr={"core_instance_type": "x9.huge"})
    cond = data["estimates"]["methods"]["conditional"]
    assert cond["dynamodb_usd"] == pytest.approx(24.0) and cond["total_usd"] is None
    assert "$24.00" in text and "unknown price" in text and "unknown price for x9.huge" in text


def test_unreadable_runs_are_skipped_and_named(archive, tmp_path):
    reason = listing.unreadable_reason(["part-00001.gz"])
    plan = make_plan(archive, str(tmp_path / "markers"), todo=[RUNS[0], RUNS[2]], unreadable=[RUNS[1]],
                     skipped=[{"run": RUNS[1], "reason": reason}])
    text, data = dry_run.dry_run(plan)
    assert data["runs_to_do"] == [RUNS[0], RUNS[2]]
    assert data["runs_skipped"] == [{"run": RUNS[1], "reason": "unreadable storage class: part-00001.gz "
                                                               "(GLACIER or DEEP_ARCHIVE: restore them first)"}]
    assert data["batches"] == batch_rows([[RUNS[0], RUNS[2]]])
    assert (data["objects"], data["events"]) == (4, 16) and data["nothing_to_do"] is None
    plan = make_plan(archive, str(tmp_path / "markers"), todo=[], done=[], unreadable=[RUNS[1]],
                     skipped=[{"run": RUNS[1], "reason": reason}])
    text, data = dry_run.dry_run(plan)
    assert data["runs_to_do"] == [] and data["batches"] == [] and data["estimates"]["events"] == 0
    assert data["nothing_to_do"] == "1 run left to do, all in an unreadable storage class"
    assert "Nothing to do: 1 run left to do, all in an unreadable storage class." in text
    assert f"  {RUNS[1]}: unreadable storage class: part-00001.gz" in text


def test_glacier_runs_are_skipped_in_s3_unless_restored(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="archive")
        for run, cls in zip(RUNS, ("STANDARD", "GLACIER", "DEEP_ARCHIVE")):
            s3.put_object(Bucket="archive", Key=f"enriched/run={run}/part-0.gz", Body=b"x" * 1300, StorageClass=cls)
            s3.put_object(Bucket="archive", Key=f"enriched/run={run}/part-1", Body=b"x" * 1300)
        s3.restore_object(Bucket="archive", Key=f"enriched/run={RUNS[2]}/part-0.gz", RestoreRequest={"Days": 1})
        found = listing.survey_runs(parse_location("s3://archive/enriched"), RUNS, s3, check_restores=True)
        unchecked = listing.survey_runs(parse_location("s3://archive/enriched"), RUNS, s3)
    assert [run for run in RUNS if found[run].unreadable] == [RUNS[1]]
    assert found[RUNS[1]].unreadable == ["part-0.gz"]
    assert not any(unchecked[run].unreadable for run in RUNS)  # a real run's plan leaves it to the job
    assert (len(found[RUNS[2]].objects), found[RUNS[2]].bytes, found[RUNS[2]].events) == (2, 2600, 7)


def test_dry_run_text_shortens_long_lists_but_json_keeps_all(tmp_path):
    many = [f"2021-04-{d:02d}-{h:02d}-00-00" for d in range(1, 4) for h in range(24)]
    for run in many:
        (tmp_path / "archive" / f"run={run}").mkdir(parents=True)
    plan = make_plan(str(tmp_path / "archive"), str(tmp_path / "markers"), todo=many, batch_size=1)
    text, data = dry_run.dry_run(plan)
    assert len(data["runs_to_do"]) == 72 and len(data["batches"]) == 72
    assert "... 32 more runs (all in --output-json)" in text and "... 32 more batches" in text
    assert "Batches (72, up to 10 min of writing or 1 runs each; each starts in ~7 s, 8 min 24 s in all):" in text
    assert many[0] in text and many[-1] in text and many[30] not in text.split("Batches")[0]


def report(run: str, batch_id: str, **counts) -> dict:
    rep = new_report(run, batch_id)
    rep["counts"].update(counts)
    rep["counts"]["lines"] = sum(v for k, v in counts.items() if k not in ("wcu_consumed", "throttle_retries"))
    return rep


def test_after_run_counts_totals_and_what_is_left(archive, tmp_path):
    plan = make_plan(archive, str(tmp_path / "markers"), ttl=False)
    store = plan.context.store
    bid_a, bid_b = (b.id for b in plan.batches)
    store.mark(RUNS[0], report(RUNS[0], bid_a, written=90, already_present=5, in_run_duplicates=3,
                               batch_duplicates=2, expired=1, no_fingerprint=4, wcu_consumed=95))
    store.mark(RUNS[1], report(RUNS[1], bid_a, already_present=7, wcu_consumed=7))
    failed = report(RUNS[2], bid_b, written=10, write_failures=3)
    store.write_json(store.report(bid_b, RUNS[2]), failed)
    done_now, reasons = collect(plan)
    assert sorted(done_now) == RUNS[:2] and reasons == {RUNS[2]: "3 write failures, 0 events not written"}
    text, data = summary.after_run(plan, 1000.0, done_now, reasons, now=1010.0)
    assert json.loads(json.dumps(data)) == data
    assert data["runs_done_now"] == RUNS[:2] and data["runs_left"] == [RUNS[2]]
    assert data["runs_failed"] == [{"run": RUNS[2], "reason": "3 write failures, 0 events not written"}]
    assert data["per_run"][RUNS[0]]["written"] == 90 and data["per_run"][RUNS[0]]["lines"] == 105
    totals = data["totals"]
    assert (totals["written"], totals["already_present"], totals["duplicates"]) == (90, 12, 5)
    assert data["wcu_used"] == 102 and data["elapsed_seconds"] == 10.0 and data["wcu_per_second"] == 10.2
    assert data["runs_without_writes"] == [{"run": RUNS[1], "reason": "every line accounted for without a write: "
                                                                      "7 already present"}]
    assert any("TTL is not enabled" in w for w in data["warnings"])
    assert any(w.startswith("1 run not marked") for w in data["warnings"])
    assert data["nothing_to_do"] is None
    assert text.splitlines()[0].startswith("Populated manifest-table: 2 runs done now, 1 already done, 1 left; "
                                           "90 items written, 102 WCU used")
    assert f"  {RUNS[2]}: 3 write failures, 0 events not written" in text
    total = next(ln for ln in text.splitlines() if ln.startswith("total"))
    assert total.split() == ["total", "90", "12", "2", "3", "4", "0", "1"]


def test_after_run_says_why_a_run_was_not_reported(archive, tmp_path):
    plan = make_plan(archive, str(tmp_path / "markers"))
    done_now, reasons = collect(plan)
    assert done_now == {} and reasons == {run: summary.NOT_REPORTED for run in RUNS}
    _, data = summary.after_run(plan, time.time(), done_now, reasons)
    assert [f["reason"] for f in data["runs_failed"]] == [summary.NOT_REPORTED] * 3


@pytest.mark.parametrize("done, since, why", [
    ([DONE], "2021-02-01-00-00-00", "every run at or after --since is already done"),
    ([DONE], None, "every run is already done"),
    ([], "2021-02-01-00-00-00", "no run at or after --since"),
    ([], None, "the archive holds no run"),
])
def test_after_run_that_did_nothing_says_why(tmp_path, done, since, why):
    plan = make_plan(str(tmp_path / "archive"), str(tmp_path / "markers"), todo=[], done=done, since=since)
    text, data = summary.after_run(plan, time.time(), {}, {})
    assert data["nothing_to_do"] == why and data["runs_done_now"] == [] and data["totals"]["written"] == 0
    assert text.startswith(f"Nothing to do for manifest-table: {why} ({fmt.plural(len(done), 'run')} already done")


@pytest.mark.parametrize("seconds, shown", [(None, "not estimated"), (0.4, "0 s"), (59, "59 s"), (61, "1 min 01 s"),
                                            (3600 * 5 + 60 * 7, "5 h 07 min"), (86400 * 3 + 3600, "3 d 01 h")])
def test_duration(seconds, shown):
    assert fmt.duration(seconds) == shown


def test_money_and_bytes():
    assert [fmt.usd(x) for x in (None, 0, 0.001, 1234.5)] == ["unknown price", "$0.00", "<$0.01", "$1,234.50"]
    assert [fmt.human_bytes(x) for x in (999, 1500, 2.5e9)] == ["999 bytes", "1.5 KB", "2.5 GB"]
