"""End-to-end benchmark: the real `luigi` command with the local runner on whole archives, at default settings
and as one batch, against the capacity-enforcing DynamoDB stand-in; printed and saved as Markdown (bench/E2E.md).

    python -m bench.e2e                 # 10 and 100 runs x 2,000 events, 1,000 runs x 200, 10 runs x 10,000
    python -m bench.e2e --quick         # 10 and 100 runs x 2,000 events only
    python -m bench.e2e --sizes 100x2000 --budget 1000

Every size gets a fresh moto state and a generated archive (bench/archive.py: 2% in-run and 1% cross-run
duplicates, a cross-run copy repeating a key of any earlier run, so most land in another batch), then five
commands: default settings (fresh table), the same again (markers kept: a resume with nothing to do), many batches
(--batch-minutes cut to about MANY_BATCHES batches, another fresh table), one batch (ONE_BATCH below, a third fresh
table) and one batch again with its markers lost (every key already in the table).
S3 goes through a recording endpoint (bench/s3_endpoint.py --record), DynamoDB through the stand-in at the budget
(bench/dynamo_endpoint.py), both in front of one moto server; memory is sampled from /proc (bench/procmem.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import boto3

from bench import procmem, s3_requests, servers
from bench.archive import generate_archive
from bench.archive_truth import ArchiveTruth
from bench.demo import write_configs
from bench.dynamo_endpoint import fetch_stats, reset_stats
from bench.e2e_report import FRESH, PASSES, PassResult, Size, SizeResult, document, idle_seconds
from bench.event_lines import run_ids
from bench.s3_endpoint import fetch_log, reset_log

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "E2E.md"
WORK = ROOT / ".bench-e2e"
ARCHIVE_BUCKET, ARCHIVE_PREFIX = "archive", "enriched"
ARCHIVE = f"s3://{ARCHIVE_BUCKET}/{ARCHIVE_PREFIX}"
MARKERS = "s3://ops"
REGION = "us-east-1"
# The extra arguments that make a whole archive one batch: more runs and more minutes of writing than any archive
# here holds.
ONE_BATCH = ["--batch-size", "100000", "--batch-minutes", "100000"]
# "many batches": --batch-minutes set so that the archive's writing splits into about this many batches, so that
# most cross-run copies land in another batch than their key's first copy.
MANY_BATCHES = 5
DEFAULT_BUDGET = 1000.0  # WCU/s: luigi.cfg's on_demand_capacity, the budget the pipeline takes for an on-demand table
SIZES = {"full": ["10x2000", "100x2000", "1000x200", "10x10000"], "quick": ["10x2000", "100x2000"]}
PASS_TIMEOUT = 3600.0


def cross_batch_copies(truth: ArchiveTruth, batch_of: Dict[str, str]) -> tuple:
    """(cross-run copies, of which in another batch than the key's first run, or None without batches)."""
    first: Dict[tuple, str] = {}
    copies = other = 0
    for run in sorted(truth.runs, key=lambda r: r.run):
        for key in run.unique_keys:
            if key in first:
                copies += 1
                other += batch_of.get(run.run) != batch_of.get(first[key])
            else:
                first[key] = run.run
    return copies, (other if batch_of else None)


class Services:
    """moto, and in front of it the recording S3 endpoint and the DynamoDB stand-in, each its own process."""

    def __init__(self, budget: float):
        self.moto, self.moto_url = servers.start_moto_server()
        self.procs = [self.moto]
        try:
            s3, self.s3_url = servers.start_url_printer(
                [sys.executable, "-m", "bench.s3_endpoint", "--upstream", self.moto_url, "--record"])
            self.procs.append(s3)
            ddb, self.ddb_url = servers.start_url_printer(
                [sys.executable, "-m", "bench.dynamo_endpoint", "--upstream", self.moto_url, "--wcu", str(budget)])
            self.procs.append(ddb)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in reversed(self.procs):
            servers.stop(proc)


def aws_env(moto_url: str) -> Dict[str, str]:
    return {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION}


def command_env(services: Services) -> Dict[str, str]:
    env = dict(os.environ, **aws_env(services.moto_url), AWS_ENDPOINT_URL_S3=services.s3_url,
               AWS_ENDPOINT_URL_DYNAMODB=services.ddb_url, LUIGI_CONFIG_PATH=str(ROOT / "luigi.cfg"),
               PYTHONUNBUFFERED="1", PATH=search_path())
    env.pop("AWS_PROFILE", None)
    return env


def luigi_command(storage: str, resolver: str, markers: str, budget: float, extra: Sequence[str]) -> List[str]:
    luigi = shutil.which("luigi", path=search_path())
    command = [luigi or "luigi", "--module", "pipeline", "PopulateManifest", "--local-scheduler",
               "--enriched-archive", ARCHIVE, "--storage-config", storage, "--resolver", resolver,
               "--markers", markers, "--create-table", "--spark-master", "local[2]"]
    if budget != DEFAULT_BUDGET:  # the pipeline learns the budget from the on-demand table and luigi.cfg
        command += ["--on-demand-capacity", f"{budget:g}"]
    return command + list(extra)


def table_items(client, table: str) -> int:
    try:
        return int(client.describe_table(TableName=table)["Table"]["ItemCount"])  # moto counts live
    except client.exceptions.ResourceNotFoundException:
        return 0


def batches_from_markers(s3, markers: str, table: str) -> Dict[str, str]:
    """run -> batch id, from the reports the markers hold ({} when they say nothing of batches)."""
    bucket, _, prefix = markers[len("s3://"):].partition("/")
    folder = "/".join(p for p in (prefix, table) if p) + "/"
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder, Delimiter="/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(folder):]
            if name.startswith("run=") and name.endswith(".json"):
                body = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                batch = (body.get("report") or {}).get("batch_id")
                if batch:
                    out[name[4:-5]] = batch
    return out


def planning_seconds(requests: list, peaks: procmem.Peaks, started: float) -> Optional[float]:
    """To the first lease request (the first batch begins), else to the first Spark JVM seen; None without either."""
    seconds = s3_requests.planning_seconds(requests, started)
    if seconds is None and peaks.first_jvm_at is not None:
        seconds = peaks.first_jvm_at - started
    return seconds


def search_path() -> str:
    """PATH with this interpreter's folder first, where pip put the `luigi` command."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def many_batches_minutes(unique: int, budget: float) -> float:
    """--batch-minutes that cuts the archive's writing at the budget into about MANY_BATCHES batches."""
    return round(max(0.01, unique / budget / 60 / MANY_BATCHES), 3)


def run_pass(services: Services, folder: Path, name: str, command: List[str], budget: float, table: str,
             dynamodb) -> PassResult:
    reset_stats(services.ddb_url)
    reset_log(services.s3_url)
    log_path = folder / f"{name.replace(' ', '-').replace(',', '')}.log"
    print(f"  {name}: {' '.join(command[3:])}", file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        started = time.time()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                                env=command_env(services))
        sampler = procmem.Sampler(proc.pid).start()
        try:
            code = proc.wait(PASS_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        wall = time.time() - started
    peaks = sampler.stop()
    stats, requests = fetch_stats(services.ddb_url), fetch_log(services.s3_url)
    log_path.with_suffix(".s3.json").write_text(json.dumps(requests))  # to look into or classify again
    marking, marked_batches = s3_requests.marking_seconds(requests)
    result = PassResult(
        name=name, code=code, wall=wall, wcu=int(stats["consumed_wcu"]), items=table_items(dynamodb, table),
        first_write_at=stats["first_write_at"], last_write_at=stats["last_write_at"],
        idle_seconds=idle_seconds(stats["per_second"]), throttled_requests=stats["throttled_requests"],
        budget=budget, peaks=peaks, s3=s3_requests.count(requests, ARCHIVE_BUCKET, ARCHIVE_PREFIX),
        planning_s=planning_seconds(requests, peaks, started), marking_s=marking,
        marked_batches=marked_batches, started=started, log=str(log_path))
    print(f"    exit {code}, {wall:.0f} s, {result.wcu:,} WCU, {result.items:,} items"
          + (f", budget use {result.budget_use:.2f}" if result.budget_use else ""), file=sys.stderr, flush=True)
    if code != 0:
        tail = Path(log_path).read_text(errors="replace").splitlines()[-5:]
        print("    " + "\n    ".join(tail), file=sys.stderr, flush=True)
    return result


def measure_size(services: Services, size: Size, budget: float, seed: int = 1) -> SizeResult:
    folder = WORK / f"{size.runs}x{size.events}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    servers.reset_moto(services.moto_url)
    env = aws_env(services.moto_url)  # this process generates and checks against moto directly, uncounted
    s3, dynamodb = (boto3.client(service, endpoint_url=services.moto_url, region_name=REGION,
                                 aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]) for service in ("s3", "dynamodb"))
    for bucket in (ARCHIVE_BUCKET, MARKERS[len("s3://"):]):
        s3.create_bucket(Bucket=bucket)
    # Hourly runs ending an hour ago: their items' 180-day ttl is in the future, so every one is written.
    start = datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    runs = run_ids(start - timedelta(hours=size.runs), size.runs)
    print(f"{size.label}: generating the archive...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    truth = generate_archive(ARCHIVE, runs, size.events, seed=seed, client=s3)
    generated = time.perf_counter() - t0
    unique = len(truth.expected_items(now=time.time()))
    result = SizeResult(size, unique, 0, sum(o.bytes for o in truth.objects) / 1e6, generated)
    commands = {}
    many = ["--batch-minutes", f"{many_batches_minutes(unique, budget):g}"]
    for name, table, markers, extra in (("default", "bench-default", "default", []),
                                        ("re-run", "bench-default", "default", []),
                                        ("many batches", "bench-many", "many", many),
                                        ("one batch", "bench-one-batch", "one-batch", ONE_BATCH),
                                        ("one batch, markers lost", "bench-one-batch", "one-batch-again", ONE_BATCH)):
        storage, resolver = write_configs(folder, table)
        commands[name] = (table, f"{MARKERS}/{markers}", luigi_command(storage, resolver, f"{MARKERS}/{markers}",
                                                                       budget, extra))
    for name in PASSES:
        table, markers, command = commands[name]
        result.passes[name] = run_pass(services, folder, name, command, budget, table, dynamodb)
        if name in FRESH:
            batch_of = batches_from_markers(s3, markers, table)
            sizes: Dict[str, int] = {}
            for batch in batch_of.values():
                sizes[batch] = sizes.get(batch, 0) + 1
            result.passes[name].batches = sorted(sizes.values(), reverse=True)
            result.cross_copies, other = cross_batch_copies(truth, batch_of)
            if other is not None:
                result.cross_other[name] = other
    for table in ("bench-default", "bench-many", "bench-one-batch"):  # moto keeps tables in memory
        dynamodb.delete_table(TableName=table)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"only {' and '.join(SIZES['quick'])} (RUNSxEVENTS)")
    p.add_argument("--sizes", nargs="+", type=Size.parse, help="archives as RUNSxEVENTS (default: "
                   f"{' '.join(SIZES['full'])})")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                   help="WCU/s of the stand-in; the pipeline is told with --on-demand-capacity when not 1000")
    p.add_argument("--output", default=str(RESULTS), help=f"Markdown file written (default {RESULTS}); '-' for none")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed or a command failed")
    a = p.parse_args(argv)
    sizes = a.sizes or [Size.parse(s) for s in SIZES["quick" if a.quick else "full"]]
    began = time.perf_counter()
    services = Services(a.budget)
    try:
        results = [measure_size(services, size, a.budget) for size in sizes]
    finally:
        services.stop()
    command = "python -m bench.e2e " + " ".join(argv if argv is not None else sys.argv[1:])
    text, verdicts = document(results, a.budget, ONE_BATCH, command.strip(), time.perf_counter() - began)
    print(text)
    if a.output != "-":
        Path(a.output).write_text(text, encoding="utf-8")
        print(f"written to {a.output}", file=sys.stderr)
    failed = any(p.code != 0 for r in results for p in r.passes.values())
    return 1 if a.check and (failed or not all(ok for _, _, ok in verdicts if ok is not None)) else 0


if __name__ == "__main__":
    sys.exit(main())
