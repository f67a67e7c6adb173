"""`--runner emr` end to end: the real `luigi` command against a moto server whose EMR steps this test executes.

moto never runs a step, so a thread here plays EMR: for each submitted step it fetches the staged job code the
step names (zip and entry script, byte for byte what the pipeline uploaded), runs it with pyspark's spark-submit
on local[2] with the step's own arguments, and sets the step's state from the exit code.
"""
import os
import subprocess
import tempfile
import threading
import time

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends
from moto.server import ThreadedMotoServer

from bench import servers
from bench.archive import generate_archive
from pipeline.local import spark_submit
from pipeline.markers import MarkerStore
from spark.storage import parse_location, read_bytes
from tests.cli import luigi_env, populate_command, run_luigi, storage_config, table_items
from tests.test_cli_backfill import ARCHIVE, recent_runs

REGION = "us-east-1"
KEY_ID, SECRET = "AKIACANARYEMR7X3Q9Z1", "emr-canary-secret-6b0f2d9e4c1a8f7e"
TASK_FAILED = 30


class FakeEmr(threading.Thread):
    """Executes (or fails) the steps submitted to moto's EMR backend, recording every step's arguments."""

    def __init__(self, endpoint: str, fail_with=None):
        super().__init__(daemon=True)
        self.endpoint, self.fail_with = endpoint, fail_with
        self.handled, self.step_args, self.stop = set(), [], threading.Event()

    def run(self):
        while not self.stop.wait(0.5):
            for cluster in list(emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters.values()):
                for step in list(cluster.steps):
                    if step.id not in self.handled and step.state in ("PENDING", "RUNNING"):
                        self.handled.add(step.id)
                        self.step_args.append(list(step.args))
                        self.execute(step)

    def execute(self, step):
        if self.fail_with:
            step.state = "FAILED"
            step.Status = dict(step.status, FailureDetails=self.fail_with)
            return
        args = step.args
        assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
        py_files, entry, spec = args[args.index("--py-files") + 1], args[-3], args[-1]
        with tempfile.TemporaryDirectory() as tmp:
            local = {}
            for uri in (py_files, entry):
                local[uri] = os.path.join(tmp, uri.rsplit("/", 1)[1])
                with open(local[uri], "wb") as f:
                    f.write(read_bytes(parse_location(uri)))
            env = dict(os.environ, AWS_ENDPOINT_URL=self.endpoint)
            code = subprocess.run([spark_submit(), "--master", "local[2]", "--py-files", local[py_files],
                                   local[entry], "--spec", spec], env=env, capture_output=True).returncode
        step.state = "COMPLETED" if code == 0 else "FAILED"


@pytest.fixture
def emr_world(tmp_path, monkeypatch):
    port = servers.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    servers.reset_moto(endpoint)  # the backends are this process's, shared with every earlier in-process moto
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    s3 = boto3.client("s3")
    for bucket in ("archive", "ops"):
        s3.create_bucket(Bucket=bucket)
    runs = recent_runs(3)
    truth = generate_archive(ARCHIVE, runs, 50, seed=5)
    storage = storage_config(tmp_path / "dynamodb.json", "manifest", KEY_ID, SECRET)
    yield endpoint, runs, truth, storage
    server.stop()


def clusters():
    return list(emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters.values())


def all_objects():
    s3 = boto3.client("s3")
    for bucket in ("archive", "ops"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                yield bucket, obj["Key"]


def test_emr_backfill_runs_steps_marks_runs_and_terminates(emr_world, tmp_path):
    endpoint, runs, truth, storage = emr_world
    emr = FakeEmr(endpoint)
    emr.start()
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--runner", "emr", "--create-table",
                               "--batch-size", "2")
    proc = run_luigi(command, tmp_path, luigi_env(endpoint))
    emr.stop.set()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert table_items("manifest") == truth.expected_items(now=time.time())
    assert MarkerStore(parse_location("s3://ops/markers"), "manifest").done_runs() == set(runs)
    assert len(clusters()) == 1 and clusters()[0].state == "TERMINATED"  # one cluster for the whole backfill
    assert len(emr.step_args) == 2
    for args in emr.step_args:
        assert KEY_ID not in " ".join(args) and SECRET not in " ".join(args)
    keys = list(all_objects())
    assert not any("/credentials/" in key for _, key in keys), "staged credentials must be gone at the end"
    for bucket, key in keys:  # no object holds a secret (the staged credentials are deleted)
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        assert KEY_ID.encode() not in body and SECRET.encode() not in body, key
    assert KEY_ID not in proc.stdout + proc.stderr and SECRET not in proc.stdout + proc.stderr


def test_failed_step_fails_its_batch_and_marks_nothing(emr_world, tmp_path):
    endpoint, runs, _, storage = emr_world
    emr = FakeEmr(endpoint, fail_with={"Reason": "Step failure", "Message": "Container killed: OOM",
                                       "LogFile": "s3://ops/logs/steps/s-1/stderr.gz"})
    emr.start()
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--runner", "emr", "--create-table",
                               "--batch-size", "3")
    proc = run_luigi(command, tmp_path, luigi_env(endpoint))
    emr.stop.set()
    assert proc.returncode == TASK_FAILED
    last = proc.stderr.strip().splitlines()[-1]
    assert "FAILED: Step failure: Container killed: OOM" in last and "s3://ops/logs/steps/s-1/stderr.gz" in last
    assert MarkerStore(parse_location("s3://ops/markers"), "manifest").done_runs() == set()
    assert clusters()[0].state != "TERMINATED"  # left for a resumed run (idle auto-termination covers it)
