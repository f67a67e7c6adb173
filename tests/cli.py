"""Helpers for tests that drive the real `luigi` command line in a subprocess against the moto server."""
from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import boto3

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LUIGI = shutil.which("luigi", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


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
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(ROOT / "luigi.cfg"), PYTHONUNBUFFERED="1")
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
