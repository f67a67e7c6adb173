"""Helpers for tests that drive the real `luigi` command line in a subprocess against the moto server."""
from __future__ import annotations

import configparser
import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import boto3
from luigi.retcodes import run_with_retcodes

from bench.archive import ArchiveTruth, generate_archive, run_ids
from bench.servers import free_port
from pipeline.orchestration import backfill
from pipeline.tasks import command as command_task
from pipeline.tasks import console

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ARCHIVE = "s3://archive/enriched"
ALREADY_RUNNING, NOT_RUN, TASK_FAILED, SCHEDULING_ERROR = 10, 25, 30, 35  # luigi.cfg [retcode]
LUIGI = shutil.which("luigi", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
LUIGID = shutil.which("luigid", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def storage_config(path: Path, table: str, key_id: Optional[str] = None, secret: Optional[str] = None) -> str:
    """A 2-0-0 storage config: with keys when given, else auth null (the default chain)."""
    auth = {"accessKeyId": key_id, "secretAccessKey": secret} if key_id else None
    data = {"name": "test manifest", "auth": auth, "awsRegion": "us-east-1", "dynamodbTable": table,
            "id": "4f0a52a1-62f6-4f37-9b1a-2b1d3a6c1a10", "purpose": "EVENTS_MANIFEST"}
    path.write_text(json.dumps({
        "schema": "iglu:com.snowplowanalytics.snowplow.storage/amazon_dynamodb_config/jsonschema/2-0-0", "data": data}))
    return str(path)


def luigi_cfg(folder: Path, changes: Dict[str, Dict[str, str]]) -> str:
    """The project's luigi.cfg with some values changed, written into `folder`."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "luigi.cfg")
    for section, values in changes.items():
        parser[section].update(values)
    path = folder / "luigi.cfg"
    with open(path, "w") as f:
        parser.write(f)
    return str(path)


def luigi_env(endpoint: Optional[str], extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Use extra={"LUIGI_CONFIG_PATH": luigi_cfg(...)} for changed settings."""
    # PYTHONFAULTHANDLER: a command that hangs can be made to print where each of its threads is (SIGABRT).
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(ROOT / "luigi.cfg"), PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    env.update(extra or {})
    return env


def populate_command(archive: str, storage: str, markers: str, *extra: str, task: str = "PopulateManifest",
                     scheduler: Optional[List[str]] = None) -> List[str]:
    return [LUIGI, "--module", "pipeline", task, *(scheduler or ["--local-scheduler"]),
            "--enriched-archive", archive, "--storage-config", storage, "--resolver", str(EXAMPLES / "resolver.json"),
            "--markers", markers, "--spark-master", "local[2]", *extra]


def run_luigi(command: List[str], cwd: Path, env: Dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}: {record.getMessage()}")


def run_in_process(command: List[str]) -> subprocess.CompletedProcess:
    """The `luigi` command run in this process by luigi's own entry point (same parser, same retcodes), for what
    needs no separate process: its exit code, its printout and its log lines as stdout and stderr."""
    collect, out = _Collect(), io.StringIO()
    root = logging.getLogger()
    root.addHandler(collect)
    code = 0
    try:
        with contextlib.redirect_stdout(out):
            try:
                run_with_retcodes([*command[1:], "--no-lock"])
            except SystemExit as exited:
                code = exited.code or 0
            command_task.run_at_exit()  # what the process does as it exits: a failed backfill's summary, ...
            backfill.close_all()  # and the next command starts anew, as in a process of its own
    finally:
        root.removeHandler(collect)
        collect.lines += [f"ERROR: {message}" for message in console.ONE_LINE_ERRORS.messages]  # as at exit
        console.ONE_LINE_ERRORS.messages.clear()
    return subprocess.CompletedProcess(command, code, out.getvalue(), "\n".join(collect.lines))


def last_error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def table_items(table: str) -> Dict[tuple, tuple]:
    """(eventId, fingerprint) -> (etlTime, ttl) for every item, via a paginated scan."""
    items = {}
    for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=table):
        for it in page["Items"]:
            items[(it["eventId"]["S"], it["fingerprint"]["S"])] = (int(it["etlTime"]["N"]), int(it["ttl"]["N"]))
    return items


def ops_objects() -> list:
    """Every object of the markers' bucket as (key, ETag): what a command must leave untouched."""
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket="ops")
    return sorted((o["Key"], o["ETag"]) for page in pages for o in page.get("Contents", []))


def recent_runs(count: int, hours_ago: int = 72) -> List[str]:
    """Runs close to now, so no item has an expired ttl."""
    start = datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    return run_ids(start - timedelta(hours=hours_ago), count)


def create_buckets() -> None:
    """The archive's bucket and the markers' ("ops"), as every end-to-end test has them."""
    s3 = boto3.client("s3")
    for bucket in ("archive", "ops"):
        s3.create_bucket(Bucket=bucket)


def make_archive(count: int, events: int, archive: str = ARCHIVE, **options) -> Tuple[List[str], ArchiveTruth]:
    """Both buckets, and `count` recent runs of `events` events each generated under `archive`."""
    create_buckets()
    runs = recent_runs(count)
    return runs, generate_archive(archive, runs, events, **options)


@dataclass
class Luigid:
    """A real central scheduler on loopback."""
    url: str
    folder: Path  # its log, output and state
    stop: Callable[[], None]  # SIGTERM, on which luigid dumps its state

    @property
    def scheduler(self) -> List[str]:
        """The luigi command's arguments for this scheduler."""
        return ["--scheduler-host", "127.0.0.1", "--scheduler-port", self.url.rsplit(":", 1)[1]]

    def api(self, method: str, **data) -> str:
        """luigid's raw answer to one API call."""
        query = urllib.parse.urlencode({"data": json.dumps(data)})
        with urllib.request.urlopen(f"{self.url}/api/{method}?{query}", timeout=10) as response:
            return response.read().decode("utf-8")


def start_luigid(folder: Path, timeout: float = 30.0) -> Luigid:
    """luigid with the project's luigi.cfg, its files in `folder`, once its API answers."""
    folder.mkdir(exist_ok=True)
    port = free_port()
    with open(folder / "output.log", "wb") as out:
        proc = subprocess.Popen([LUIGID, "--address", "127.0.0.1", "--port", str(port), "--logdir", str(folder),
                                 "--state-path", str(folder / "state.pickle")], stdout=out, stderr=subprocess.STDOUT,
                                cwd=folder, env=dict(os.environ, LUIGI_CONFIG_PATH=str(ROOT / "luigi.cfg")))

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)

    luigid = Luigid(f"http://127.0.0.1:{port}", folder, stop)
    deadline = time.time() + timeout
    while True:
        try:
            luigid.api("resource_list")
            return luigid
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                stop()
                raise RuntimeError(f"luigid did not start on {luigid.url}: "
                                   f"{(folder / 'output.log').read_text()[-2000:]}") from None
            time.sleep(0.2)
