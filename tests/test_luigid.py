"""A small backfill under a real luigid on 127.0.0.1, read back through luigid's own API; the first screen when
no luigid answers; luigi-deps listing every run's marker."""
import json
import subprocess
import time

from bench.servers import free_port
from pipeline.stores.markers import MarkerStore
from pipeline.tasks.scheduler import SCHEDULER_UNREACHABLE
from spark.storage import parse_location
from tests.cli import (
    ARCHIVE,
    LUIGI,
    ROOT,
    luigi_env,
    make_archive,
    populate_command,
    run_luigi,
    storage_config,
    table_items,
)


def tasks(luigid, status: str) -> dict:
    return json.loads(luigid.api("task_list", status=status, upstream_status="", search=""))["response"]


def test_backfill_is_visible_in_luigid(moto_reset, tmp_path, luigid):
    runs, truth = make_archive(4, 60, seed=3)
    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--create-table", "--batch-size", "2",
                               "--max-write-capacity", "30", "--progress-seconds", "1",
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

    done = list(tasks(luigid, "DONE").values())
    by_family = {}
    for task in done:
        by_family.setdefault(task["name"], []).append(task)
    assert sorted(by_family) == ["EnumerateRuns", "PopulateManifest", "RunBatch", "ValidateConfigs"]
    assert by_family["ValidateConfigs"][0]["status_message"].startswith(f"storage config {storage}: DynamoDB "
                                                                        "table manifest in us-east-1")
    assert by_family["EnumerateRuns"][0]["status_message"].startswith(
        "4 runs in the archive: 4 to do, 0 done, 0 skipped; 2 batches")
    batches = sorted(by_family["RunBatch"], key=lambda t: t["params"]["first_run"])
    assert [(b["params"]["first_run"], b["params"]["last_run"], b["params"]["runs"]) for b in batches] == [
        (runs[0], runs[1], "2"), (runs[2], runs[3], "2")]
    for batch in batches:
        assert len(batch["params"]) <= 8
        assert batch["params"]["first_run"] in batch["display_name"]  # the list and the graph name its runs
        assert batch["status_message"].startswith("2 of 2 runs marked")
        assert batch["progress_percentage"] == 100 and batch["tracking_url"]
    assert batches[0]["priority"] > batches[1]["priority"] > 0  # oldest first, after luigid's propagation
    store = MarkerStore(parse_location("s3://ops/markers"), "manifest")
    marked = [store.read_marker(r)["marked_at"] for r in runs]
    assert marked == sorted(marked)  # and so they ran: the markers were written in run order
    assert by_family["PopulateManifest"][0]["status_message"].startswith("Populated manifest: 4 runs done now")
    messages = [m for name, m, _ in seen if name == "RunBatch" and m]
    assert len(set(messages)) >= 3, messages  # the message changes as work progresses
    assert any("starting Spark" in m for m in messages) and any("progress: " in m for m in messages)
    assert any("backfill: 2 of 4 runs done" in m for m in messages), messages  # where the whole backfill stands
    assert any(p is not None and 0 < p < 100 for name, _, p in seen if name == "RunBatch"), seen
    assert "progress: " in output  # the same one-line progress report on the console


def test_unreachable_scheduler_is_one_line_and_its_own_exit_code(tmp_path):
    port = free_port()
    command = [LUIGI, "--module", "pipeline", "PopulateManifest", "--storage-config", "s.json", "--resolver",
               "r.json", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port)]
    started = time.monotonic()
    proc = run_luigi(command, tmp_path, luigi_env(None), timeout=60)
    assert proc.returncode == SCHEDULER_UNREACHABLE
    assert time.monotonic() - started < 30  # not Luigi's minute of retries
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"ERROR: the central scheduler at http://127.0.0.1:{port}/ does not answer (Connection "
                     "refused): start it (`luigid --address 127.0.0.1 --port 8082`, see docs/operations.md) or run "
                     "with --local-scheduler"], proc.stderr
    assert "UnconsumedParameterWarning" not in proc.stderr


def test_luigi_deps_lists_every_run_marker(moto_reset, tmp_path):
    runs, _ = make_archive(3, 5, seed=4)
    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--create-table", "--batch-size", "2")
    command[0] = str(ROOT / ".venv" / "bin" / "luigi-deps") if not LUIGI else LUIGI + "-deps"
    command.remove("--local-scheduler")
    proc = run_luigi(command, tmp_path, luigi_env(moto_reset), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for run in runs:
        assert f"[S3] s3://ops/markers/manifest/run={run}.json" in proc.stdout, proc.stdout
    assert proc.stdout.count("TASK: RunBatch(") == 2
