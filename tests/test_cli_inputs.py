"""Bad input through the real `luigi` command: one clear line, a non-zero exit, nothing written."""
import boto3
import pytest

from tests.cli import EXAMPLES, SCHEDULING_ERROR, luigi_env, populate_command, run_luigi, storage_config


@pytest.fixture
def world(moto_reset, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="archive")
    s3.put_object(Bucket="archive", Key="enriched/run=2026-05-01-00-00-00/part-00000", Body=b"x")
    return tmp_path, storage_config(tmp_path / "dynamodb.json", "manifest"), moto_reset


def nothing_written(tmp_path):
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []
    assert [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]] == ["archive"]
    assert not (tmp_path / ".manifest-markers").exists()


@pytest.mark.parametrize("args,message", [
    (["--since", "2026-02-30"], "--since '2026-02-30' is not a date"),
    (["--since", "yesterday"], "--since 'yesterday' is not a date"),
    (["--runner", "spark"], "--runner 'spark' is not one of: local, emr"),
    (["--enriched-archive", "ftp://archive/enriched"], "unsupported scheme 'ftp://'"),
    (["--enriched-archive", "s3://Bad_Bucket/x"], "is not a valid S3 bucket name"),
    (["--enriched-archive", "s3://archive/nope"], "enriched archive s3://archive/nope does not exist"),
    (["--enriched-archive", "s3://missing-bucket/x"], "does not exist"),
    (["--markers", "s3://archive/enriched/markers"], "is inside the enriched archive"),
    (["--markers", "s3a://archive/enriched"], "is inside the enriched archive"),
    (["--markers", "s3://ops/a/../b"], "'..'"),
    (["--markers", "../markers"], "'..' is not allowed"),
    (["--storage-config", "missing.json"], "missing.json: "),
    (["--resolver", "missing-resolver.json"], "missing-resolver.json: "),
    (["--storage-config", str(EXAMPLES / "resolver.json")], "resolver.json: "),
    (["--runner", "emr", "--markers", "/tmp/m"], "--runner emr needs the archive and --markers in S3"),
    (["--write-mode", "fast", "--workers", "2"], "cannot run batches in parallel"),
])
def test_bad_input_is_one_line_and_nothing_written(world, args, message):
    tmp_path, storage, endpoint = world
    base = populate_command("s3://archive/enriched", storage, ".manifest-markers")
    # later flags win in luigi's parser, so the bad value replaces the good default
    proc = run_luigi(base + args, tmp_path, luigi_env(endpoint), timeout=120)
    assert proc.returncode == SCHEDULING_ERROR, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: ") and message in last, last
    assert "Traceback" not in proc.stderr
    nothing_written(tmp_path)


def test_missing_table_is_named_without_create(world):
    tmp_path, storage, endpoint = world
    proc = run_luigi(populate_command("s3://archive/enriched", storage, ".manifest-markers"), tmp_path,
                     luigi_env(endpoint))
    assert proc.returncode == SCHEDULING_ERROR
    assert "ERROR: DynamoDB table 'manifest' does not exist in us-east-1" in proc.stderr.splitlines()[-1]
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
