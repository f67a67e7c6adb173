"""A small backfill under a real luigid on 127.0.0.1, read back through luigid's own API."""
import json
import subprocess
import time

from tests.cli import ARCHIVE, luigi_env, make_archive, populate_command, storage_config, table_items


def tasks(luigid, status: str) -> dict:
    return json.loads(luigid.api("task_list", status=status, upstream_status="", search=""))["response"]


def test_backfill_is_visible_in_luigid(moto_reset, tmp_path, luigid):
    runs, truth = make_archive(2, 80, seed=3)
    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--create-table", "--batch-size", "2",
                               "--max-write-capacity", "15", "--progress-seconds", "1",
                               scheduler=luigid.scheduler)
    proc = subprocess.Popen(command, cwd=tmp_path, env=luigi_env(moto_reset), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []  # (family, status message, progress) of running tasks, as luigid reports them
    while proc.poll() is None:
        for task in tasks(luigid, "RUNNING").values():
            seen.append((task["name"], task.get("status_message"), task.get("progress_percentage")))
        time.sleep(0.5)
    output = proc.stdout.read()
    assert proc.returncode == 0, output[-3000:]
    assert table_items("manifest") == truth.expected_items(now=time.time())

    done = {t["name"]: t for t in tasks(luigid, "DONE").values()}
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
