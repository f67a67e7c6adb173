"""The write benchmark's events and tables: seeded events with duplicates over runs, the items the job writes
for them, and what a table holds afterwards."""
from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Dict, List, Sequence, Tuple

import boto3

from bench.event_lines import new_fingerprint, new_uuid, run_ids, run_time
from spark.events import ttl_for
from spark.manifest import ATTRIBUTES, KEY_SCHEMA, ManifestItem, item_attributes

REGION = "us-east-1"
BENCH_CREDENTIALS = {"accessKeyId": "bench", "secretAccessKey": "bench"}  # every endpoint here is on loopback
TTL_DAYS = 180


Event = Tuple[str, str, int, str]  # eventId, fingerprint, etlTime (epoch s), run id


def make_events(unique: int, duplicates: float, runs: int, seed: int) -> List[Event]:
    """`unique` events over `runs` hourly runs in archive order, plus copies of ~`duplicates` of them in the same or
    a later run (a re-sent or re-processed event), placed at random within their run."""
    rng = random.Random(seed)
    ids = run_ids(datetime(2026, 1, 1, tzinfo=timezone.utc), runs)
    etl = {run: int(run_time(run).timestamp()) for run in ids}
    by_run: Dict[str, List[Event]] = {run: [] for run in ids}
    originals = []
    for _ in range(unique):
        run = rng.choice(ids)
        event = (new_uuid(rng), new_fingerprint(rng), etl[run], run)
        by_run[run].append(event)
        originals.append(event)
    for event in rng.sample(originals, round(unique * duplicates)):
        run = rng.choice(ids[ids.index(event[3]):])
        by_run[run].append((event[0], event[1], etl[run], run))
    out: List[Event] = []
    for run in ids:
        rng.shuffle(by_run[run])
        out.extend(by_run[run])
    return out


def collapse(events: Sequence[Event]) -> List[Event]:
    """One event per key, the earliest etlTime winning, in order of first appearance: what the job writes."""
    kept: Dict[Tuple[str, str], Event] = {}
    for event in events:
        key = (event[0], event[1])
        if key not in kept or event[2] < kept[key][2]:
            kept[key] = event
    return list(kept.values())


def manifest_item(event: Event):
    return ManifestItem(event[0], event[1], event[2], ttl_for(event[2], TTL_DAYS), event[3])


def attributes(event: Event) -> dict:
    return item_attributes(manifest_item(event))


def session():
    """A boto3 session with fixed fake credentials: every endpoint here is on loopback, so no real ones are read."""
    return boto3.session.Session(aws_access_key_id=BENCH_CREDENTIALS["accessKeyId"],
                                 aws_secret_access_key=BENCH_CREDENTIALS["secretAccessKey"], region_name=REGION)


def create_table(client, name: str) -> None:
    client.create_table(TableName=name, KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES,
                        BillingMode="PAY_PER_REQUEST")


def table_etl_times(client, name: str) -> Dict[Tuple[str, str], int]:
    out = {}
    pages = client.get_paginator("scan").paginate(
        TableName=name, ConsistentRead=True, ProjectionExpression="eventId, fingerprint, etlTime")
    for page in pages:
        for it in page["Items"]:
            out[(it["eventId"]["S"], it["fingerprint"]["S"])] = int(it["etlTime"]["N"])
    return out


def missing_and_wrong(expected: Sequence[Event], present: Dict[Tuple[str, str], int]) -> Tuple[int, int]:
    """Unique items absent from the table, and those present with another etlTime than the earliest."""
    missing = wrong = 0
    for event in expected:
        etl = present.get((event[0], event[1]))
        if etl is None:
            missing += 1
        elif etl != event[2]:
            wrong += 1
    return missing, wrong
