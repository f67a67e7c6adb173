"""The Spark job's import mode without Spark: its spec check, the DYNAMODB_JSON line and one staged partition."""
import gzip
import json

import pytest

from spark import job
from spark.manifest import ManifestItem, import_line
from spark.passes import PassConfig, stage_partition
from spark.spec import BatchSpec

NOW = 1_700_000_000
DAY = 86400


def spec(**changes) -> BatchSpec:
    values = dict(batch_id="b", archive="/tmp/archive", runs=["2024-01-01-00-00-00"], reports="/tmp/reports",
                  table="t", region="us-east-1", mode="import", max_write_capacity=0.0, staging="/tmp/staging")
    values.update(changes)
    return BatchSpec(**values)


def test_import_spec_needs_a_staging_prefix_but_no_capacity():
    job.check_spec(spec())
    with pytest.raises(job.JobError, match="an import batch spec must name its staging prefix"):
        job.check_spec(spec(staging=""))
    with pytest.raises(job.JobError, match="max_write_capacity must be positive"):
        job.check_spec(spec(mode="populate"))


def test_import_line_is_dynamodb_json():
    line = import_line(ManifestItem("e1", "f1", 100, 200, "2024-01-01-00-00-00"))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"Item": {"eventId": {"S": "e1"}, "fingerprint": {"S": "f1"}, "etlTime": {"N": "100"},
                                         "ttl": {"N": "200"}}}


def stage_config(staging) -> PassConfig:
    return PassConfig(ttl_days=180, now=NOW, write_expired=False, endpoints={}, staging=str(staging))


def test_a_partition_stages_each_keys_earliest_unexpired_copy(tmp_path):
    recent, older, stale = NOW - DAY, NOW - 2 * DAY, NOW - 200 * DAY
    keys = [
        (("e1", "f1"), ((older, "r1", 1), (recent, "r2", 2))),  # r1 wins; r2 has a duplicate in-run too
        (("e2", "f2"), ((stale, "r1", 1), (recent, "r2", 1))),  # r1's copy expired: r2's is the item
        (("e3", "f3"), ((stale, "r1", 3),)),  # expired only: nothing staged
    ]
    config = stage_config(tmp_path)
    (result,) = stage_partition(7, iter(keys), config)
    assert result["error"] is None
    assert result["outcomes"] == {"r1": {"written": 1, "expired": 2, "in_run_duplicates": 2},
                                  "r2": {"written": 1, "in_run_duplicates": 1, "batch_duplicates": 1}}
    lines = gzip.decompress((tmp_path / "part-00007.json.gz").read_bytes()).splitlines()
    items = {(i["Item"]["eventId"]["S"], int(i["Item"]["etlTime"]["N"])) for i in map(json.loads, lines)}
    assert items == {("e1", older), ("e2", recent)}


def test_an_empty_partition_stages_no_object(tmp_path):
    config = stage_config(tmp_path)
    (result,) = stage_partition(0, iter([]), config)
    assert result == {"outcomes": {}, "error": None, "refused": False} and list(tmp_path.iterdir()) == []


def test_a_partition_that_cannot_stage_counts_its_items_as_write_failures(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    keys = [(("e1", "f1"), ((NOW - DAY, "r1", 2),))]
    config = stage_config(blocker)
    (result,) = stage_partition(0, iter(keys), config)
    assert result["error"] and "\n" not in result["error"]
    assert result["outcomes"] == {"r1": {"write_failures": 1, "in_run_duplicates": 1}}
