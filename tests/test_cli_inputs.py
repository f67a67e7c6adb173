"""Bad input: one clear line, a non-zero exit, nothing written. Each check in-process through the command's task;
the `luigi` command itself where its exit code and last line are the point."""
import boto3
import pytest

from pipeline.rules.errors import PipelineError
from pipeline.tasks.populate import PopulateManifest
from tests.cli import EXAMPLES, SCHEDULING_ERROR, luigi_env, populate_command, run_luigi, storage_config


@pytest.fixture
def world(moto_reset, tmp_path, monkeypatch):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="archive")
    s3.put_object(Bucket="archive", Key="enriched/run=2026-05-01-00-00-00/part-00000", Body=b"x")
    monkeypatch.chdir(tmp_path)
    return tmp_path, storage_config(tmp_path / "dynamodb.json", "manifest"), moto_reset


def nothing_written(tmp_path):
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []
    assert [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]] == ["archive"]
    assert not (tmp_path / ".manifest-markers").exists()


@pytest.mark.parametrize("args,message", [
    ({"since": "2026-02-30"}, "--since '2026-02-30' is not a date"),
    ({"since": "yesterday"}, "--since 'yesterday' is not a date"),
    ({"runner": "spark"}, "--runner 'spark' is not one of: local, emr"),
    ({"enriched_archive": "ftp://archive/enriched"}, "unsupported scheme 'ftp://'"),
    ({"enriched_archive": "s3://Bad_Bucket/x"}, "is not a valid S3 bucket name"),
    ({"enriched_archive": "s3://archive/nope"}, "enriched archive s3://archive/nope does not exist"),
    ({"enriched_archive": "s3://missing-bucket/x"}, "does not exist"),
    ({"markers": "s3://archive/enriched/markers"}, "is inside the enriched archive"),
    ({"markers": "s3a://archive/enriched"}, "is inside the enriched archive"),
    ({"markers": "s3://ops/a/../b"}, "'..'"),
    ({"markers": "../markers"}, "'..' is not allowed"),
    ({"storage_config": "missing.json"}, "missing.json: "),
    ({"resolver": "missing-resolver.json"}, "missing-resolver.json: "),
    ({"storage_config": str(EXAMPLES / "resolver.json")}, "resolver.json: "),
    ({"runner": "emr", "markers": "/tmp/m"}, "--runner emr needs the archive and --markers in S3"),
    ({"batch_minutes": 0}, "--batch-minutes must be more than 0"),
    ({}, "DynamoDB table 'manifest' does not exist in us-east-1"),  # and no --create-table
])
def test_bad_input_is_one_line_and_nothing_written(world, args, message):
    tmp_path, storage, _ = world
    params = dict(dict(enriched_archive="s3://archive/enriched", storage_config=storage,
                       resolver=str(EXAMPLES / "resolver.json"), markers=".manifest-markers"), **args)
    with pytest.raises(PipelineError) as failure:
        PopulateManifest(**params).requires()  # what Luigi calls while scheduling
    assert message in str(failure.value) and "\n" not in str(failure.value), str(failure.value)
    nothing_written(tmp_path)


def test_the_command_exits_35_with_the_message_as_its_last_line(world):
    tmp_path, storage, endpoint = world
    command = populate_command("s3://archive/enriched", storage, ".manifest-markers", "--write-mode", "fast",
                               "--workers", "2")  # later flags win in luigi's parser
    proc = run_luigi(command, tmp_path, luigi_env(endpoint), timeout=120)
    assert proc.returncode == SCHEDULING_ERROR, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: ") and "cannot run batches in parallel" in last, last
    assert "Traceback" not in proc.stderr and "UnconsumedParameterWarning" not in proc.stderr
    nothing_written(tmp_path)


def test_exit_codes_hold_from_a_folder_without_luigi_cfg(world):
    """After `pip install`, the command works from anywhere: [retcode] must not depend on ./luigi.cfg."""
    tmp_path, storage, endpoint = world
    env = luigi_env(endpoint)
    env.pop("LUIGI_CONFIG_PATH")
    proc = run_luigi(populate_command("s3://archive/enriched", storage, ".manifest-markers", "--since", "x"),
                     tmp_path, env, timeout=120)
    assert proc.returncode == SCHEDULING_ERROR
    assert proc.stderr.strip().splitlines()[-1].startswith("ERROR: --since 'x'")
