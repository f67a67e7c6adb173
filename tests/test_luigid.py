"""A small backfill under a real luigid on 127.0.0.1, read back through luigid's own API."""
import json
import subprocess
import time
import urllib.parse
import urllib.request

import boto3
import pytest

from bench import servers
from bench.archive import generate_archive
from tests.cli import luigi_env, populate_command, storage_config, table_items
from tests.test_cli_backfill import ARCHIVE, recent_runs


def api(port: int, method: str, **data) -> dict:
    query = urllib.parse.quote(json.dumps(data))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{method}?data={query}", timeout=5) as r:
        return json.load(r)["response"]


@pytest.fixture
def luigid(tmp_path):
    port = servers.free_port()
    proc = subprocess.Popen(["luigid", "--address", "127.0.0.1", "--port", str(port), "--logdir", str(tmp_path),
                             "--state-path", str(tmp_path / "state.pickle")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            api(port, "task_list", status="DONE", upstream_status="", search="")
            break
        except OSError:
            assert time.time() < deadline, "luigid did not start"
            time.sleep(0.3)
    yield port
    servers.stop(proc)


def test_backfill_is_visible_in_luigid(moto_reset, tmp_path, luigid):
    s3 = boto3.client("s3")
    for bucket in ("archive", "ops"):
        s3.create_bucket(Bucket=bucket)
    runs = recent_runs(2)
    truth = generate_archive(ARCHIVE, runs, 80, seed=3)
    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--create-table", "--batch-size", "2",
                               "--max-write-capacity", "15", "--progress-seconds", "1",
                               scheduler=["--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)])
    proc = subprocess.Popen(command, cwd=tmp_path, env=luigi_env(moto_reset), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []  # (family, status message, progress) of running tasks, as luigid reports them
    while proc.poll() is None:
        for task in api(luigid, "task_list", status="RUNNING", upstream_status="", search="").values():
            seen.append((task["name"], task.get("status_message"), task.get("progress_percentage")))
        time.sleep(0.5)
    output = proc.stdout.read()
    assert proc.returncode == 0, output[-3000:]
    assert table_items("manifest") == truth.expected_items(now=time.time())

    done = {t["name"]: t for t in api(luigid, "task_list", status="DONE", upstream_status="", search="").values()}
    assert set(done) == {"PopulateManifest", "RunBatch"}
    batch = done["RunBatch"]
    assert batch["status_message"].startswith("2 of 2 runs marked")
    assert batch["progress_percentage"] == 100 and batch["tracking_url"]
    assert json.loads(batch["params"]["runs"]) == runs
    assert done["PopulateManifest"]["status_message"].startswith("Populated manifest: 2 runs done now")
    messages = [m for name, m, _ in seen if name == "RunBatch" and m]
    assert len(set(messages)) >= 3, messages  # the message changes as work progresses
    assert any("starting Spark" in m for m in messages) and any("progress: " in m for m in messages)
    assert any(p is not None and 0 < p < 100 for name, _, p in seen if name == "RunBatch"), seen
    assert "progress: " in output  # the same one-line progress report on the console
