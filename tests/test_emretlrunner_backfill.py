"""A config.yml given to PopulateManifest, in-process (luigi's own run_with_retcodes, local scheduler): the dry run
estimates the cluster the file describes, and a file the backfill cannot use exits 35 with one line, before any AWS
call."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import boto3
import pytest
from luigi.retcodes import run_with_retcodes

from bench.servers import free_port
from tests.cli import EXAMPLES, SCHEDULING_ERROR, storage_config

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "snowplow" / "real-configs" / "emretlrunner"
SAMPLE_1_0_4 = str(REAL / "emr-etl-runner@1.0.4__eer__config.yml.sample")
SPARSE_R117 = str(REAL / "snowplow@r117-biskupin__eerspec__sparse_config.yml")
PRE_R70 = str(REAL / "snowplow@r68-turquoise-jay__eer__config.yml.sample")


def populate(tmp_path, *args: str) -> int:
    """PopulateManifest's exit code, run as the `luigi` command runs it (same retcodes, same argument parser)."""
    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    argv = ["--module", "pipeline", "PopulateManifest", "--local-scheduler", "--no-lock", "--storage-config", storage,
            "--resolver", str(EXAMPLES / "resolver.json"), "--markers", "s3://ops/markers", *args]
    with pytest.raises(SystemExit) as exited:
        run_with_retcodes(argv)
    return exited.value.code


def test_dry_run_estimates_the_cluster_of_the_config_yml(moto_reset, tmp_path, capsys):
    """emr-etl-runner 1.0.4's sample: master and core m4.large, core on SPOT, not luigi.cfg's m5.xlarge."""
    s3 = boto3.client("s3")
    for bucket in ("archive", "ops"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="archive", Key="enriched/run=2026-05-01-00-00-00/part-00000", Body=b"x" * 5000)
    plan = tmp_path / "plan.json"
    code = populate(tmp_path, "--enriched-archive", "s3://archive/enriched", "--runner", "emr", "--dry-run",
                    "--create-table", "--emretlrunner-config", SAMPLE_1_0_4, "--output-json", str(plan))
    assert code == 0
    assert "EMR: new cluster of 1 master m4.large + 2 core m4.large SPOT." in capsys.readouterr().out
    groups = json.loads(plan.read_text())["estimates"]["methods"]["fast"]["emr"]["groups"]
    assert [(g["role"], g["instance_type"], g["count"], g["market"]) for g in groups] == [
        ("master", "m4.large", 1, "ON_DEMAND"), ("core", "m4.large", 2, "SPOT")]
    assert boto3.client("emr", region_name="us-east-1").list_clusters()["Clusters"] == []


@pytest.fixture
def no_aws(monkeypatch):
    """Every AWS endpoint is a closed port: an AWS call would fail with a connection error, not our message."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


@pytest.mark.parametrize("args, message", [
    (["--emretlrunner-config", SAMPLE_1_0_4],
     f"EmrEtlRunner config {SAMPLE_1_0_4}: no enriched archive: aws.s3.buckets.enriched.archive is still the "
     "sample's 'ADD HERE'; set it, or give --enriched-archive"),
    (["--emretlrunner-config", PRE_R70],
     f"EmrEtlRunner config {PRE_R70}: no enriched archive: the file has the layout of EmrEtlRunner before R70"),
    (["--emretlrunner-config", SPARSE_R117, "--runner", "emr"],
     f"enriched archive 'ea' from aws.s3.buckets.enriched.archive in {SPARSE_R117} is not in S3: --runner emr needs "
     "an s3:// archive"),
])
def test_a_config_yml_the_backfill_cannot_use_exits_35_with_one_line(tmp_path, no_aws, caplog, args, message):
    with caplog.at_level(logging.WARNING, logger="luigi-interface"):
        assert populate(tmp_path, *args) == SCHEDULING_ERROR
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(e.startswith(message) and "\n" not in e for e in errors), errors


def test_a_bad_cluster_value_of_the_config_yml_exits_35_naming_it(tmp_path, no_aws, caplog):
    yml = tmp_path / "config.yml"
    yml.write_text(Path(SAMPLE_1_0_4).read_text().replace("core_instance_count: 2", "core_instance_count: -2"))
    with caplog.at_level(logging.WARNING, logger="luigi-interface"):
        code = populate(tmp_path, "--enriched-archive", "s3://archive/enriched", "--runner", "emr",
                        "--emretlrunner-config", str(yml))
    assert code == SCHEDULING_ERROR
    assert f"EmrEtlRunner config {yml}: aws.emr.jobflow.core_instance_count -2 cannot be used: -2 must not be " \
           "negative" in caplog.text
