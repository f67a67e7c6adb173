"""When AWS says no: the real `luigi` command against a moto server that enforces IAM.

Every refusal ends the command with one line (at most 300 characters, no traceback anywhere) naming the identity,
the IAM action and the resource, and AWS's code and message; a refusal met by a batch stops the others from
starting, and the same command resumes once it is fixed. Two IAM users play the two identities: `config`, whose
keys are in the storage config, and `chain`, the default credential chain (AWS_ACCESS_KEY_ID in the environment).
moto sees every DynamoDB request as resource `*`, so the `config` user's statements name `*`.
"""
from __future__ import annotations

import json
from typing import List, Optional

import boto3
import pytest

from bench.servers import free_port, stop
from pipeline.stores.markers import MarkerStore
from spark.storage import parse_location
from tests import iam
from tests.cli import (
    ARCHIVE,
    SCHEDULING_ERROR,
    TASK_FAILED,
    luigi_env,
    make_archive,
    populate_command,
    run_in_process,
    run_luigi,
    storage_config,
    table_items,
)
from tests.graph import FakeLauncher, use_fake

DYNAMODB = ["dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:CreateTable",
            "dynamodb:UpdateTimeToLive", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:PutItem"]
MARKERS = "s3://ops/markers"
MARKER_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]


def s3_statements(markers_objects: List[str], archive_list: bool = True) -> List[dict]:
    listed = ["arn:aws:s3:::ops"] + (["arn:aws:s3:::archive"] if archive_list else [])
    return [iam.allow(["s3:ListBucket"], listed), iam.allow(["s3:GetObject"], ["arn:aws:s3:::archive/*"]),
            iam.allow(markers_objects, ["arn:aws:s3:::ops/markers/*"])]


@pytest.fixture(scope="module")
def server():
    found, proc = iam.start()
    yield found
    stop(proc)


@pytest.fixture
def world(server, tmp_path, monkeypatch):
    """Two runs of ten events; what the test allows each identity is up to it (`allow`), then IAM is enforced."""
    server.open()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    runs, truth = make_archive(2, 10, seed=3)

    def allow(dynamodb: List[str] = DYNAMODB, markers: List[str] = MARKER_ACTIONS,
              archive_list: bool = True, config_keys: Optional[iam.Keys] = None, chain: Optional[iam.Keys] = None):
        config = server.user("config", [iam.allow(list(dynamodb), ["*"])])
        default = server.user("chain", s3_statements(list(markers), archive_list))
        storage = storage_config(tmp_path / "dynamodb.json", "manifest", *(config_keys or config))
        admin = server.enforce()
        for name, value in server.env(admin).items():  # the test's own requests
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3.client() keeps its first credentials
        return storage, luigi_env(server.url, server.env(chain or default))

    return allow, runs, truth, tmp_path, server


def last_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def one_line_at_the_end(proc, *said: str) -> str:
    """The command's last line, checked: it says all of `said`, fits 300 characters, and no traceback anywhere."""
    line = last_line(proc)
    assert line.startswith("ERROR: ") and len(line) - len("ERROR: ") <= 300, line
    assert all(s in line for s in said), line
    assert "Traceback" not in proc.stdout + proc.stderr
    return line[len("ERROR: "):]


@pytest.mark.parametrize("case,said", [
    ("unknown storage config keys", ["AWS rejected the credentials of the storage config's keys (dynamodb.json)",
                                     "security token", "dynamodb:DescribeTable",
                                     "DynamoDB table 'manifest' in us-east-1", "InvalidClientTokenId"]),
    ("storage config keys denied DescribeTable", ["AWS denied dynamodb:DescribeTable on DynamoDB table 'manifest' "
                                                  "in us-east-1 to the storage config's keys (dynamodb.json)",
                                                  "AccessDenied"]),
    ("unknown default chain", ["AWS rejected the credentials of the default AWS credential chain", "access key",
                               "s3:ListBucket on s3://archive/enriched/", "InvalidAccessKeyId"]),
    ("default chain denied ListBucket on the archive", ["AWS denied s3:ListBucket on s3://archive/enriched/ to the "
                                                        "default AWS credential chain", "AccessDenied"]),
    ("DynamoDB endpoint unreachable", ["cannot connect to the endpoint http://127.0.0.1:", "dynamodb:DescribeTable",
                                       "Connection refused"]),
])
def test_a_refusal_while_planning_is_one_line_and_exit_35(world, case, said):
    allow, runs, _, tmp_path, _ = world
    unknown = ("AKIAUNKNOWNKEY000001", "not-a-secret")
    if case == "unknown storage config keys":
        storage, env = allow(config_keys=unknown)
    elif case == "storage config keys denied DescribeTable":
        storage, env = allow(dynamodb=[a for a in DYNAMODB if a != "dynamodb:DescribeTable"])
    elif case == "unknown default chain":
        storage, env = allow(chain=unknown)
    elif case == "default chain denied ListBucket on the archive":
        storage, env = allow(archive_list=False)
    else:
        storage, env = allow()
        env["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_luigi(populate_command(ARCHIVE, storage, MARKERS, "--create-table"), tmp_path, env, timeout=120)
    assert proc.returncode == SCHEDULING_ERROR, proc.stderr[-3000:]
    one_line_at_the_end(proc, *said)
    assert MarkerStore(parse_location(MARKERS), "manifest").done_runs() == set()


def test_a_refused_lease_stops_the_backfill_which_resumes_once_granted(world, monkeypatch):
    """The markers' prefix may not be written: the first batch's hold is refused, no other batch starts; granted,
    the same command does every run (in this process, the job played by tests/graph.py's fake)."""
    allow, runs, _, tmp_path, server = world
    storage, env = allow(markers=["s3:GetObject", "s3:DeleteObject"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    fake = use_fake(monkeypatch, FakeLauncher())
    out = tmp_path / "summary.json"
    command = populate_command(ARCHIVE, storage, MARKERS, "--create-table", "--batch-size", "1", "--output-json",
                               str(out))
    proc = run_in_process(command)
    assert proc.returncode == TASK_FAILED
    line = one_line_at_the_end(proc, "AWS denied s3:PutObject on s3://ops/markers/manifest/_leases/hold=",
                               "to the default AWS credential chain", "AccessDenied")
    assert proc.stderr.count(line) == 2  # where it happened, and as the last line: never once per batch
    assert "* 1 failed" in proc.stderr and "* 1 was not granted run permission" in proc.stderr  # of two batches
    summary = json.loads(out.read_text())
    assert summary["stopped_by_refusal"] == line
    assert summary["runs_not_started"] == runs and summary["runs_left"] == runs
    assert "stopped at AWS's refusal: 2 runs not started" in proc.stdout
    assert fake.specs == []
    server.client("iam", server.users["admin"]).put_user_policy(
        UserName="chain", PolicyName="allowed", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement":
                                                                           s3_statements(MARKER_ACTIONS)}))
    again = run_in_process(command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert MarkerStore(parse_location(MARKERS), "manifest").done_runs() == set(runs)
    assert [spec.runs for spec in fake.specs] == [[run] for run in runs]


# Conditional mode's refused PutItem is also named by test_iam_enforced_write.py's real command (dropping it), and
# the stop is the same code whatever the mode: its whole run here is a slow variant.
@pytest.mark.parametrize("mode,action", [("fast", "dynamodb:BatchWriteItem"),
                                         pytest.param("conditional", "dynamodb:PutItem", marks=pytest.mark.slow)])
def test_a_write_refused_inside_the_job_stops_the_backfill(world, mode, action):
    """Refused inside the Spark job: told in the job's report, one line here, and no other batch starts."""
    allow, runs, truth, tmp_path, server = world
    storage, env = allow(dynamodb=[a for a in DYNAMODB if a != action])
    out = tmp_path / "summary.json"
    command = populate_command(ARCHIVE, storage, MARKERS, "--create-table", "--batch-size", "1", "--write-mode",
                               mode, "--output-json", str(out))
    proc = run_luigi(command, tmp_path, env)
    assert proc.returncode == TASK_FAILED, proc.stderr[-3000:]
    line = one_line_at_the_end(proc, f"AWS denied {action} on DynamoDB table 'manifest' in us-east-1 to the "
                                     "storage config's keys (dynamodb.json)", "AccessDenied")
    assert proc.stderr.count(line) == 2  # not once per run, nor passed on again from the job's own log
    assert proc.stderr.count(" runs to do: ") == 1  # the second batch never started
    summary = json.loads(out.read_text())
    assert summary["runs_not_started"] == runs[1:] and summary["runs_left"] == runs
    assert summary["stopped_by_refusal"] == line
    assert table_items("manifest") == {}

