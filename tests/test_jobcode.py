"""The job code: a deterministic, importable zip, and one entry with one argument list for both runners."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import boto3
import pytest
from moto import mock_aws

from pipeline.configs.emr_settings import EmrSettings
from pipeline.runners import jobcode
from pipeline.runners.emr import EmrRunner
from spark.spec import BatchSpec
from spark.storage import parse_location


def test_the_spec_location_is_the_only_argument():
    assert jobcode.job_arguments("s3://acme-ops/specs/b-1.json") == ["--spec", "s3://acme-ops/specs/b-1.json"]


def test_entry_script_is_inside_the_spark_package():
    import spark

    assert jobcode.entry_script() == os.path.join(os.path.dirname(os.path.abspath(spark.__file__)), "populate.py")


def test_zip_is_deterministic_and_named_by_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = jobcode.build_job_zip(str(tmp_path / "a")), jobcode.build_job_zip(str(tmp_path / "b"))
    assert os.path.basename(first) == os.path.basename(second) == f"spark-{jobcode.code_hash()[:12]}.zip"
    with open(first, "rb") as f1, open(second, "rb") as f2:
        assert f1.read() == f2.read()
    with zipfile.ZipFile(first) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert "spark/__init__.py" in names and "spark/storage.py" in names and "spark/spec.py" in names
    assert all(n.startswith("spark/") and n.endswith(".py") and "__pycache__" not in n for n in names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_zip_is_importable_on_its_own(tmp_path):
    path = jobcode.build_job_zip(str(tmp_path))
    env = dict(os.environ, PYTHONPATH=path)
    code = "import spark.storage, spark.spec, spark.job; print(spark.storage.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == os.path.join(path, "spark", "storage.py")


def test_code_hash_follows_content_not_location(tmp_path):
    copy = tmp_path / "spark"
    shutil.copytree(jobcode.package_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert jobcode.code_hash(str(copy)) == jobcode.code_hash()
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "junk.py").write_text("x = 1\n")
    (copy / "notes.txt").write_text("not code\n")
    assert jobcode.code_hash(str(copy)) == jobcode.code_hash()
    with open(copy / "spec.py", "a") as f:
        f.write("\n# changed\n")
    assert jobcode.code_hash(str(copy)) != jobcode.code_hash()


def _tail(command, entry):
    """What follows the job code locations: the entry, then the job's arguments."""
    at = command.index(entry)
    return command[at + 1:]


def test_local_and_emr_commands_run_the_same_entry_with_the_same_arguments():
    spec = "s3://acme-ops/specs/b-1.json"
    local = jobcode.local_command("/opt/spark-submit", "local[*]", "/tmp/spark-abc.zip", spec,
                                  {"spark.ui.enabled": "false"})
    step = jobcode.emr_step_args("s3://acme-ops/code/spark-abc.zip", "s3://acme-ops/code/populate.py", spec, [])
    assert local == ["/opt/spark-submit", "--master", "local[*]", "--conf", "spark.ui.enabled=false",
                     "--py-files", "/tmp/spark-abc.zip", jobcode.entry_script(), "--spec", spec]
    assert step == ["spark-submit", "--deploy-mode", "cluster", "--py-files", "s3://acme-ops/code/spark-abc.zip",
                    "s3://acme-ops/code/populate.py", "--spec", spec]
    assert _tail(local, jobcode.entry_script()) == _tail(step, "s3://acme-ops/code/populate.py")
    assert local[local.index("--py-files") + 2] == jobcode.entry_script()


@pytest.fixture
def moto_aws(monkeypatch):
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def test_the_emr_step_ships_the_local_entry_and_zip(moto_aws, tmp_path):
    """What the step runs on EMR is, byte for byte, what the local runner runs, with the same arguments."""
    s3 = moto_aws.client("s3")
    s3.create_bucket(Bucket="acme-ops")
    staging = parse_location("s3://acme-ops/staging")
    spec = BatchSpec(batch_id="b-1", archive="s3://acme/archive", runs=["2026-05-01-00-00-00"],
                     reports="s3://acme-ops/staging/reports/b-1", table="manifest", region="us-east-1")
    s3.put_object(Bucket="acme-ops", Key="staging/specs/b-1.json", Body=spec.to_json().encode())
    spec_uri = "s3://acme-ops/staging/specs/b-1.json"

    def finish_step(n):
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.emr.models import emr_backends

        emr_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].clusters[run.cluster_id].steps[-1].state = "COMPLETED"

    run = EmrRunner(EmrSettings(), "bf", staging, moto_aws, sleep=finish_step)
    assert run.run_batch("b-1", spec_uri, lambda m, p: None, lambda u: None).ok
    (step,) = moto_aws.client("emr").list_steps(ClusterId=run.cluster_id)["Steps"]
    args = step["Config"]["Args"]
    zip_path = jobcode.build_job_zip(str(tmp_path))
    local = jobcode.local_command("spark-submit", "local[*]", zip_path, spec_uri, {})
    zip_uri, entry_uri = args[args.index("--py-files") + 1], args[args.index("--py-files") + 2]
    assert _tail(args, entry_uri) == _tail(local, jobcode.entry_script()) == ["--spec", spec_uri]

    def fetch(uri):
        loc = parse_location(uri)
        return s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()

    with open(jobcode.entry_script(), "rb") as f:
        assert fetch(entry_uri) == f.read()
    with open(zip_path, "rb") as f:
        assert fetch(zip_uri) == f.read()
    assert os.path.basename(zip_uri) == os.path.basename(zip_path)
