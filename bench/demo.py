"""`make demo`: a whole backfill on this machine, against a moto server on 127.0.0.1 standing in for AWS.

It writes a realistic sample archive to S3, runs the real `luigi` command with the local runner, prints what was
written, then runs the same command again to show that a finished backfill is skipped and writes nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench import servers
from bench.archive import generate_archive, run_ids

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
ARCHIVE = "s3://acme-snowplow/enriched/archive"
MARKERS = "s3://acme-ops/manifest-markers"
TABLE = "snowplow-event-manifest"
REGION = "us-east-1"


def write_configs(folder: Path, table: str) -> tuple:
    """A storage config for `table` (auth null: the default credential chain) and the example resolver."""
    storage = {
        "schema": "iglu:com.snowplowanalytics.snowplow.storage/amazon_dynamodb_config/jsonschema/2-0-0",
        "data": {"name": "demo manifest", "auth": None, "awsRegion": REGION, "dynamodbTable": table,
                 "id": "56799a26-980c-4148-8bd9-c021b988c669", "purpose": "EVENTS_MANIFEST"},
    }
    storage_path, resolver_path = folder / f"{table}.json", folder / "resolver.json"
    storage_path.write_text(json.dumps(storage, indent=2))
    shutil.copy(ROOT / "examples" / "resolver.json", resolver_path)
    return str(storage_path), str(resolver_path)


def populate(env: dict, storage: str, resolver: str) -> int:
    command = ["luigi", "--module", "pipeline", "PopulateManifest", "--local-scheduler",
               "--enriched-archive", ARCHIVE, "--storage-config", storage, "--resolver", resolver,
               "--markers", MARKERS, "--create-table", "--batch-size", "3", "--max-write-capacity", "200",
               "--spark-master", "local[2]"]
    print("\n$ " + " ".join(command), flush=True)
    return subprocess.run(command, env=env, cwd=WORK).returncode


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    proc, url = servers.start_moto_server()
    print(f"moto server (S3 and DynamoDB stand-in) on {url}")
    env = dict(os.environ, AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo",
               AWS_DEFAULT_REGION=REGION, LUIGI_CONFIG_PATH=str(ROOT / "luigi.cfg"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_DEFAULT_REGION")})
    try:
        import boto3

        s3 = boto3.client("s3")
        for bucket in ("acme-snowplow", "acme-ops"):
            s3.create_bucket(Bucket=bucket)
        # recent runs: with the shredders' 180-day ttl, older events would be expired and (rightly) not written
        start = datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
        runs = run_ids(start - timedelta(hours=6), 5)
        truth = generate_archive(ARCHIVE, runs, 400, malformed_fraction=0.004, no_fingerprint_fraction=0.01,
                                 stream_enrich_runs=1, seed=7)
        print(f"sample archive {ARCHIVE}: {len(runs)} runs ({runs[0]} .. {runs[-1]}), {len(truth.objects)} objects "
              "of every kind (plain, .gz, .gzip, .csv, .csv.gz, multi-member gzip, S3 Loader names), with "
              "duplicates, malformed lines, events without fingerprint and one stream-enrich run")
        storage, resolver = write_configs(WORK, TABLE)
        first = populate(env, storage, resolver)
        count = boto3.client("dynamodb").scan(TableName=TABLE, Select="COUNT")["Count"]
        print(f"\nfirst run exited {first}; table {TABLE} holds {count} items")
        second = populate(env, storage, resolver)
        after = boto3.client("dynamodb").scan(TableName=TABLE, Select="COUNT")["Count"]
        print(f"\nsecond run exited {second}; table {TABLE} still holds {after} items")
        return 0 if first == 0 and second == 0 and after == count else 1
    finally:
        servers.stop(proc)
        print("moto server stopped")


if __name__ == "__main__":
    sys.exit(main())
