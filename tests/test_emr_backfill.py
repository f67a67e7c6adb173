"""`--runner emr` end to end: the real `luigi` command against a moto server whose EMR steps this test executes.

moto never runs a step, so a thread here plays EMR: for each submitted step it fetches the staged job code the
step names (zip and entry script, byte for byte what the pipeline uploaded), runs it with pyspark's spark-submit
on local[2] with the step's own arguments, and sets the step's state from the exit code.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import List

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends
from moto.server import ThreadedMotoServer

from bench import servers
from pipeline.runners.local import spark_submit
from pipeline.stores.markers import MarkerStore
from spark.storage import parse_location, read_bytes
from tests import procs
from tests.cli import (
    ARCHIVE,
    TASK_FAILED,
    luigi_cfg,
    luigi_env,
    make_archive,
    populate_command,
    run_luigi,
    storage_config,
    table_items,
)
from tests.test_secrets import KEY_ID, SECRET, leaks, luigid_answers

REGION = "us-east-1"


class FakeEmr(threading.Thread):
    """Executes (or fails) the steps submitted to moto's EMR backend, recording every step's arguments."""

    def __init__(self, endpoint: str, fail_with=None, hang: bool = False):
        super().__init__(daemon=True)
        self.endpoint, self.fail_with, self.hang = endpoint, fail_with, hang
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
        if self.hang:  # a step that runs on and on
            step.state = "RUNNING"
            return
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
    runs, truth = make_archive(3, 50, seed=5)
    storage = storage_config(tmp_path / "dynamodb.json", "manifest", KEY_ID, SECRET)
    yield endpoint, runs, truth, storage
    server.stop()


def emr_env(endpoint: str, folder) -> dict:
    """The luigi command's environment, looking at a step every second rather than backing off to a minute."""
    return luigi_env(endpoint, {"LUIGI_CONFIG_PATH": luigi_cfg(folder, {"emr": {"poll_seconds": "1"}})})


def as_from_a_terminal(command: List[str]) -> List[str]:
    """The command with Ctrl-C's SIGINT at its default, as a shell in a terminal starts it: a suite started in the
    background (`make test &`, nohup) passes SIGINT on ignored, and the command rightly keeps ignoring it."""
    restore = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
               "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", restore, *command]


def signal_masks(pid: int) -> dict:
    """Each thread's blocked, ignored and caught signals, as /proc tells them."""
    masks = {}
    for task in sorted(os.listdir(f"/proc/{pid}/task")):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            masks[task] = " ".join(line.split()[0] + line.split()[1][-4:] for line in f
                                   if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
    return masks


def clusters():
    return list(emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters.values())


def all_objects():
    s3 = boto3.client("s3")
    for bucket in ("archive", "ops"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                yield bucket, obj["Key"]


def test_emr_count_and_backfill_under_luigid_leave_no_secret_and_no_cluster(emr_world, tmp_path, luigid):
    """The EMR half of the secrets canary, with a dry run's count step before the backfill's steps."""
    endpoint, runs, truth, storage = emr_world
    env = emr_env(endpoint, tmp_path)
    scheduler = luigid.scheduler
    emr = FakeEmr(endpoint)
    emr.start()
    command_lines = set()
    plan_file = tmp_path / "plan.json"
    with procs.polling(lambda: command_lines.update(procs.cmdline(pid) for pid in procs.pids())):
        dry = run_luigi(populate_command(ARCHIVE, storage, "s3://ops/markers", "--runner", "emr", "--create-table",
                                         "--dry-run",
                                         "--count-events", "--output-json", str(plan_file), scheduler=scheduler),
                        tmp_path, env)
        after_count = [(c.id, c.state) for c in clusters()]
        proc = run_luigi(populate_command(ARCHIVE, storage, "s3://ops/markers", "--runner", "emr", "--create-table",
                                          "--batch-size", "2", scheduler=scheduler), tmp_path, env)
    emr.stop.set()
    # The dry run counted every run's valid events in one step on a cluster of its own, then ended it.
    assert dry.returncode == 0, dry.stderr[-3000:]
    plan = json.loads(plan_file.read_text())
    assert plan["events_source"] == "counted"
    assert {r: plan["per_run"][r]["events"] for r in runs} == {r: len(truth.run(r).events) for r in runs}
    assert len(after_count) == 1 and after_count[0][1] == "TERMINATED"
    # The backfill: one more cluster, one step per batch, every run marked, the cluster ended.
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert table_items("manifest") == truth.expected_items(now=time.time())
    assert MarkerStore(parse_location("s3://ops/markers"), "manifest").done_runs() == set(runs)
    assert len(clusters()) == 2 and all(c.state == "TERMINATED" for c in clusters())
    assert len(emr.step_args) == 3
    keys = list(all_objects())
    assert not any("/credentials/" in key or "/counts/" in key for _, key in keys), "staged files must be gone"
    answers = luigid_answers(luigid)
    assert "RunBatch" in answers["task_list DONE"], answers["task_list DONE"]
    luigid.stop()

    found = leaks("the dry run's output", dry.stdout + dry.stderr) + leaks("the output", proc.stdout + proc.stderr)
    found += [leak for args in emr.step_args for leak in leaks(f"step arguments {args}", " ".join(args))]
    for bucket, key in keys:
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        found += leaks(f"s3://{bucket}/{key}", key) + leaks(f"the object s3://{bucket}/{key}", body)
    found += [leak for line in command_lines for leak in leaks(f"the command line {line[:200]}", line)]
    found += [leak for key, text in answers.items() for leak in leaks(f"luigid's {key}", text)]
    assert any("populate.py" in line and "--spec s3://" in line for line in command_lines), "no job seen"
    assert not found, found


def test_failed_step_fails_its_batch_and_marks_nothing(emr_world, tmp_path):
    endpoint, runs, _, storage = emr_world
    emr = FakeEmr(endpoint, fail_with={"Reason": "Step failure", "Message": "Container killed: OOM",
                                       "LogFile": "s3://ops/logs/steps/s-1/stderr.gz"})
    emr.start()
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--runner", "emr", "--create-table",
                               "--batch-size", "3")
    proc = run_luigi(command, tmp_path, emr_env(endpoint, tmp_path))
    emr.stop.set()
    assert proc.returncode == TASK_FAILED
    last = proc.stderr.strip().splitlines()[-1]
    assert "FAILED: Step failure: Container killed: OOM" in last and "s3://ops/logs/steps/s-1/stderr.gz" in last
    assert MarkerStore(parse_location("s3://ops/markers"), "manifest").done_runs() == set()
    assert clusters()[0].state != "TERMINATED"  # left for a resumed run (idle auto-termination covers it)
    assert not [key for _, key in all_objects() if "/credentials/" in key]  # the keys are never left behind


@pytest.mark.parametrize("stop,said", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_a_stopped_backfill_deletes_its_staged_credentials(emr_world, tmp_path, stop, said):
    """SIGTERM or Ctrl-C while a step runs: the command ends with its summary kept, the staged keys deleted and the
    cluster left for a resumed run, its last line saying so, no traceback, exit 128 + the signal."""
    endpoint, runs, _, storage = emr_world
    emr = FakeEmr(endpoint, hang=True)
    emr.start()
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--runner", "emr", "--create-table")
    with open(tmp_path / "out.log", "w") as out:
        proc = subprocess.Popen(as_from_a_terminal(command), cwd=tmp_path, env=emr_env(endpoint, tmp_path), stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            while not (emr.step_args and [k for _, k in all_objects() if "/credentials/" in k]):
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "out.log").read_text()
                time.sleep(0.2)
            masks = signal_masks(proc.pid)
            proc.send_signal(stop)
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:  # where it hangs: faulthandler prints every thread's stack
                proc.send_signal(signal.SIGABRT)
                proc.wait(10)
                pytest.fail(f"still running 60 s after {said}; signal masks (hex) when it was sent: {masks}\n"
                            f"{(tmp_path / 'out.log').read_text()[-6000:]}")
        finally:
            emr.stop.set()
            if proc.poll() is None:
                proc.kill()
    output = (tmp_path / "out.log").read_text()
    assert code == 128 + stop, output[-3000:]
    assert output.strip().splitlines()[-1].startswith(f"ERROR: stopped by {said}: "), output[-3000:]
    keys = [key for _, key in all_objects()]
    assert not [key for key in keys if "/credentials/" in key], keys
    assert [key for key in keys if "/_summaries/" in key], "a stopped backfill keeps its summary"
    assert clusters()[0].state != "TERMINATED"
    assert "Traceback" not in output
