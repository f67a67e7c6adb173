"""Run ids, --since, enumeration (paginated, over 1,000 runs) and batching."""
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from pipeline.configs.params import Params, check_params
from pipeline.rules import batches, runs
from pipeline.rules.errors import PipelineError
from pipeline.stores import listing
from spark.runid import parse_run_id
from spark.storage import parse_location


@pytest.mark.parametrize("text,expected", [
    ("2026-05-01-12-00-00", "2026-05-01-12-00-00"),
    ("2017-13-01-00-00-00", None),  # month 13
    ("2026-02-30-00-00-00", None),  # a date that does not exist
    ("2026-05-01-24-00-00", None),
    ("2026-05-01-12-00", None),
    ("2026-05-01-12-00-00x", None),
    ("2026-5-1-12-00-00", None),
])
def test_parse_run_id(text, expected):
    assert parse_run_id(text) == expected


@pytest.mark.parametrize("since,expected", [
    ("", None),
    ("2026-05-01", "2026-05-01-00-00-00"),
    ("2026-05-01-12-30-59", "2026-05-01-12-30-59"),
])
def test_parse_since(since, expected):
    assert runs.parse_since(since) == expected


@pytest.mark.parametrize("bad", ["yesterday", "2026-02-30", "2026-13-01", "2026-05-01-25-00-00", "20260501"])
def test_parse_since_rejects_non_dates(bad):
    with pytest.raises(PipelineError, match="--since .* is not a date"):
        runs.parse_since(bad)


def test_since_is_inclusive_on_both_forms():
    all_runs = ["2026-04-30-23-59-59", "2026-05-01-00-00-00", "2026-05-01-12-00-00", "2026-05-02-00-00-00"]
    todo, before = runs.split_since(all_runs, runs.parse_since("2026-05-01"))
    assert todo == all_runs[1:] and before == all_runs[:1]
    todo, before = runs.split_since(all_runs, runs.parse_since("2026-05-01-12-00-00"))
    assert todo == all_runs[2:] and before == all_runs[:2]
    assert runs.split_since(all_runs, None) == (all_runs, [])


def test_batches_by_count_are_sorted_and_deterministic():
    ids = [f"2026-05-{d:02d}-00-00-00" for d in range(7, 0, -1)]
    made = batches.by_count(ids, 3)
    assert [len(b.runs) for b in made] == [3, 3, 1]
    assert [r for b in made for r in b.runs] == sorted(ids)
    assert made == batches.by_count(list(reversed(ids)), 3)
    assert len({b.id for b in made}) == 3
    assert batches.by_count(ids[:3], 3)[0].id != batches.by_count(ids[1:4], 3)[0].id
    assert all(b.id.startswith("clean-x-") for b in batches.by_count(ids, 3, "clean-x-"))


def test_batches_by_work_fill_minutes_at_the_budget_and_cap_runs():
    ids = [f"2026-05-01-{h:02d}-00-00" for h in range(10)]
    events = {run: 30_000 for run in ids}  # 30 s each at 1,000 WCU/s
    made = batches.by_work(ids, events, budget=1000, minutes=1.0, max_runs=100)
    assert [len(b.runs) for b in made] == [2, 2, 2, 2, 2]  # 2 runs reach a minute of writing
    assert [b.events for b in made] == [60_000] * 5
    assert [r for b in made for r in b.runs] == ids
    assert [len(b.runs) for b in batches.by_work(ids, events, 1000, 60.0, 4)] == [4, 4, 2]  # the cap holds
    big = dict(events, **{ids[0]: 10_000_000})
    assert [len(b.runs) for b in batches.by_work(ids, big, 1000, 1.0, 100)][:2] == [1, 2]  # alone when too big
    assert [len(b.runs) for b in batches.by_work(ids, {}, 1000, 1.0, 100)] == [10]  # empty runs: one batch
    assert made[0].describe() == f"2 runs ({ids[0]} .. {ids[1]})"


def test_parameter_checks_need_no_aws():
    base = Params(enriched_archive="/tmp/archive", storage_config="s.json", resolver="r.json", markers="/tmp/m")
    for change, message in [({"batch_size": 0}, "--batch-size must be at least 1"),
                            ({"batch_minutes": 0}, "--batch-minutes must be more than 0"),
                            ({"method": "copy"}, "--method 'copy' is not one of: write, import"),
                            ({"method": "import"}, "--method import stages its files under --markers")]:
        with pytest.raises(PipelineError, match=message):
            check_params(base.replace(**change))
    assert check_params(base).since is None


def test_enumerate_local_skips_names_that_are_not_runs(tmp_path):
    for name in ["run=2026-05-01-00-00-00", "run=2017-13-01-00-00-00", "tmp", "run=2026-05-02-00-00-00",
                 "run=2026-05-03-00-00-00-old"]:
        (tmp_path / name).mkdir()
    found, skipped = listing.enumerate_runs(parse_location(str(tmp_path)))
    assert found == ["2026-05-01-00-00-00", "2026-05-02-00-00-00"]
    assert sorted(s["run"] for s in skipped) == ["run=2017-13-01-00-00-00", "run=2026-05-03-00-00-00-old", "tmp"]


def test_enumerate_s3_paginates_past_1000_runs(moto_reset):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="archive")
    expected = [f"2026-{1 + i // 600:02d}-{1 + (i // 24) % 25:02d}-{i % 24:02d}-{i % 60:02d}-00" for i in range(1100)]
    with ThreadPoolExecutor(8) as pool:  # moto answers one request at a time per connection: overlap them
        list(pool.map(lambda run: s3.put_object(Bucket="archive", Key=f"enriched/run={run}/part-00000", Body=b"x"),
                      expected))
    s3.put_object(Bucket="archive", Key="enriched/tmp/x", Body=b"x")
    found, skipped = listing.enumerate_runs(parse_location("s3a://archive/enriched"), s3)
    assert found == sorted(set(expected)) and len(found) == 1100
    assert skipped == [{"run": "tmp", "reason": skipped[0]["reason"]}]
