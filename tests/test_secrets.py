"""Secrets canary: whole backfills with a storage config whose keys are unique strings, under a real luigid.

Neither string may appear in any log line, S3 object name or content (markers, reports, batch specs, summaries),
table item, process command line or environment, leftover temporary file, or luigid answer, log or state. The only
place they may be is the user's own config file, and while the job runs the local runner's private credentials
file, which must be gone at the end. The EMR half of the canary is in tests/test_emr_backfill.py.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Dict, List

import boto3

from tests import procs
from tests.cli import ARCHIVE, ROOT, Luigid, luigi_env, make_archive, populate_command, storage_config

KEY_ID = "AKIA" + secrets.token_hex(8).upper()  # shaped like a real key id, unique to this test session
SECRET = "canary/" + secrets.token_urlsafe(30)
# Parts of them too: a leak cut short or partly masked is still a leak.
CANARIES = {"the key id": KEY_ID, "the secret key": SECRET, "part of the key id": KEY_ID[4:],
            "part of the secret key": SECRET[7:27]}
SPEC_ARGUMENT = re.compile(r"--spec (\S+)")


def leaks(where: str, data) -> List[str]:
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
    return [f"{where} holds {what}" for what, canary in CANARIES.items() if canary in text]


def luigid_answers(luigid: Luigid) -> Dict[str, str]:
    """Everything luigid's API tells about the tasks it saw: lists, graphs, errors, status messages, progress."""
    answers = {}
    for status in ("", "PENDING", "RUNNING", "DONE", "FAILED", "DISABLED", "UNKNOWN"):
        answers[f"task_list {status}"] = luigid.api("task_list", status=status, upstream_status="", search="")
    for method in ("graph", "worker_list", "resource_list"):
        answers[method] = luigid.api(method)
    answers["task_search"] = luigid.api("task_search", task_str="")
    task_ids = set(json.loads(answers["task_list "])["response"])
    for task_id in task_ids:
        for method in ("fetch_error", "get_task_status_message", "get_task_progress_percentage", "dep_graph",
                       "inverse_dep_graph", "get_running_task_resources"):
            answers[f"{method} {task_id}"] = luigid.api(method, task_id=task_id)
    return answers


def s3_contents() -> Dict[str, bytes]:
    """Every object of every bucket, by s3:// name; gzip inflated, archived (unreadable) objects as b''."""
    s3 = boto3.client("s3")
    found = {}
    for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"]):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                data = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                found[f"s3://{bucket}/{obj['Key']}"] = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return found


def table_dump() -> str:
    dynamodb = boto3.client("dynamodb")
    return json.dumps([dynamodb.scan(TableName=t)["Items"] for t in dynamodb.list_tables()["TableNames"]])


def test_no_secret_anywhere_in_a_backfill_under_luigid(moto_reset, luigid, tmp_path):
    runs, _ = make_archive(3, 40, malformed_fraction=0.05, seed=5)
    private_tmp = tmp_path / "tmp"  # the luigi process's TMPDIR: the runner's private folder is made there
    private_tmp.mkdir()
    env = luigi_env(moto_reset, {"TMPDIR": str(private_tmp)})
    scheduler = luigid.scheduler
    configs = {name: storage_config(tmp_path / f"{name}.json", name, KEY_ID, SECRET) for name in ("manifest", "absent")}
    private: Dict[str, dict] = {}  # the runner's private folder, as seen while the job runs
    command_lines, environments = set(), {}
    root = []

    def watch() -> None:
        # This backfill's processes only: another test run on the same machine has its own keys and folders.
        ours = [root[-1], *procs.descendants(root[-1])] if root else []
        for pid in ours:
            line = procs.cmdline(pid)
            if line in command_lines:
                continue
            command_lines.add(line)
            for spec in SPEC_ARGUMENT.findall(line):
                folder = os.path.dirname(spec)
                credentials = os.path.join(folder, "credentials.json")
                if folder not in private and os.path.exists(credentials):
                    private[folder] = {"mode": stat.S_IMODE(os.stat(credentials).st_mode),
                                       "holds_key": KEY_ID in Path(credentials).read_text()}
        for pid in procs.descendants(root[-1]) if root else ():
            environments[pid] = procs.read(pid, "environ")

    outputs = {}
    with procs.polling(watch):
        for name, extra in (("absent", []),
                            ("manifest", ["--create-table", "--batch-size", "10", "--max-malformed-fraction", "0.2"])):
            command = populate_command(ARCHIVE, configs[name], "s3://ops/markers", *extra,
                                       scheduler=scheduler)
            proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            root.append(proc.pid)
            out, err = proc.communicate(timeout=400)
            outputs[name] = (proc.returncode, out + err)

    # Both backfills did what the canary needs: one failed with a message, one wrote everything there is.
    code, output = outputs["absent"]
    assert code != 0 and b"absent" in output.splitlines()[-1], output[-2000:]
    assert outputs["manifest"][0] == 0, outputs["manifest"][1][-3000:]
    assert private and all(p == {"mode": 0o600, "holds_key": True} for p in private.values()), \
        f"the job's private credentials file was not seen as expected while it ran: {private}"
    assert not [folder for folder in private if os.path.exists(folder)], "the private credentials folder is left"
    objects = s3_contents()
    for part in ("/_batches/", "/_reports/", "/_summaries/", "/run="):
        assert any(part in name and name.startswith("s3://ops/markers/manifest/") for name in objects), part
    assert any("populate.py" in line for line in command_lines), "the watcher never saw the job's command line"
    assert len(environments) > 3, "the watcher saw too few of the backfill's processes"
    answers = luigid_answers(luigid)
    assert "RunBatch" in answers["task_list DONE"] and "PopulateManifest" in answers["task_list DONE"], answers
    assert any("absent" in text for key, text in answers.items() if key.startswith("fetch_error")), \
        "luigid holds no error message of the failed backfill"
    luigid.stop()
    assert (luigid.folder / "state.pickle").exists(), "luigid dumped no state"

    found = []
    for name, (_, output) in outputs.items():
        found += leaks(f"the output of the {name} backfill", output)
    for name, data in objects.items():
        found += leaks(f"the object name {name}", name) + leaks(f"the object {name}", data)
    found += leaks("the table", table_dump())
    for line in command_lines:
        found += leaks(f"the command line {line[:200]}", line)
    for pid, environ in environments.items():
        found += leaks(f"the environment of process {pid}", environ)
    for key, text in answers.items():
        found += leaks(f"luigid's {key}", text)
    allowed = {Path(path) for path in configs.values()}  # the user's own config files
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file() and p not in allowed):
        found += leaks(f"the file {path}", path.read_bytes())
    assert not found, found


def test_luigid_is_documented_and_configured_on_loopback():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(luigid\s.*)$", readme, re.M)  # every luigid command line the README shows
    assert commands and all("--address 127.0.0.1" in line for line in commands), commands
    assert re.search(r"^scheduler_host = 127\.0\.0\.1$", (ROOT / "luigi.cfg").read_text(), re.M)
