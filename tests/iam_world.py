"""A moto server that enforces IAM, and the drop-one-action-at-a-time proof of the generated IAM policies, for
tests/test_iam_enforced_*.py.

For each setup, the policies are the command's own `--dry-run --output-json` `iam_policies`, run as an
administrator. Then every single action is dropped in turn from exactly those policies, and the command must fail
with its last line saying AWS denied that action, or succeed where the action is not needed on that path
(NOT_NEEDED says which and why). A drop is tried first in this process with the fake launcher of tests/graph.py in
place of the Spark job (the pipeline's own requests); an action the pipeline never sends is the job's, and only
then is the command run with its real spark-submit without it. An action sent by the same code in an earlier setup
is not dropped again (ARCHIVE_READ, TABLE_READ and POPULATE say where it was). Last, the whole command under exactly the
policies must leave the table and the markers exact.

Two IAM users stand for the two identities: "store" owns the storage config's keys, "chain" is the default chain
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY of this process, which the job inherits). What moto cannot prove:
- moto sees every DynamoDB request as resource `*`, so the DynamoDB statements' resources are widened to `*` here
  (their actions are kept exactly); S3 resources are checked by moto for real;
- moto ignores IAM conditions (the s3:prefix of the listings);
- moto's ImportTable reads the staged items and writes no logs as the caller (it reads S3 internally), so the S3
  read and CloudWatch Logs actions DynamoDB needs from ImportTable's caller cannot be shown to be needed here;
- the EMR runner's policies (EMR, iam:PassRole, KMS, the instance profile) are not run: moto runs no step.
The session moto server of conftest.py never has authentication switched on: each test module starts its own.
"""
from __future__ import annotations

import copy
import gzip
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import boto3

from bench.servers import stop
from pipeline.orchestration import launch
from pipeline.stores.markers import MarkerStore
from spark import storage
from spark.manifest import ATTRIBUTES, KEY_SCHEMA, ManifestItem, import_line, item_attributes
from spark.storage import parse_location
from tests import iam
from tests.cli import last_error, make_archive, populate_command, run_in_process, storage_config
from tests.graph import EVENTS, FakeLauncher

ARCHIVE, MARKERS = "s3://archive/enriched", "s3://ops/markers"
USERS = {"storage-config": "store", "default-chain": "chain"}
Drop = Tuple[str, str, str]  # (identity, Sid, action)


@dataclass
class World:
    keys: Dict[str, Tuple[str, str]]  # user -> (access key id, secret)
    admin: boto3.session.Session
    tmp: Path
    runs: List[str]
    truth: object

    @contextmanager
    def as_user(self, user: str) -> Iterator[None]:
        """This process's default chain is `user` for the block."""
        saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = self.keys[user]
        boto3.setup_default_session()  # boto3.client() keeps the credentials its default session first found
        try:
            yield
        finally:
            restore_environment(saved)

    def command(self, task: str, table: str, user: str, *extra: str) -> List[str]:
        """The command with a storage config holding `user`'s keys."""
        config = storage_config(self.tmp / f"{table}-{user}.json", table, *self.keys[user])
        return populate_command(ARCHIVE, config, MARKERS, *extra, task=task)

    def policies(self, task: str, table: str, *extra: str) -> Dict[str, dict]:
        """The command's `iam_policies` from its dry run (as the administrator), DynamoDB resources widened."""
        out = self.tmp / f"{table}-plan.json"
        with self.as_user("admin"):
            done = run_in_process(self.command(task, table, "admin", *extra, "--dry-run", "--output-json", str(out)))
        assert done.returncode == 0, done.stderr[-3000:]
        policies = json.loads(out.read_text())["iam_policies"]
        assert set(policies) == set(USERS), policies
        for document in policies.values():
            for statement in document["Statement"]:
                if statement["Action"][0].startswith("dynamodb:"):
                    statement["Resource"] = ["*"]  # moto sees every DynamoDB request as resource '*'
        return policies

    def grant(self, policies: Dict[str, dict], *drops: Drop) -> None:
        """Each user's only policy: its identity's document, without the dropped actions."""
        client = self.admin.client("iam")
        for identity, document in policies.items():
            document = copy.deepcopy(document)
            for statement in document["Statement"]:
                statement["Action"] = [a for a in statement["Action"]
                                       if (identity, statement["Sid"], a) not in drops]
            document["Statement"] = [s for s in document["Statement"] if s["Action"]]
            client.put_user_policy(UserName=USERS[identity], PolicyName="populator",
                                PolicyDocument=json.dumps(document))

    def run(self, task: str, table: str, *extra: str, fake: Optional[FakeLauncher] = None):
        """The command in this process as the two users: with `fake` in place of the Spark job, or the real one
        (pyspark's spark-submit)."""
        command_line = self.command(task, table, "store", *extra, *([] if fake else ["--spark-master", "local[1]"]))
        original = launch.LAUNCHERS["local"]
        launch.LAUNCHERS["local"] = (lambda ctx: fake) if fake else launch.LocalLauncher
        try:
            with self.as_user("chain"):
                return run_in_process(command_line)
        finally:
            launch.LAUNCHERS["local"] = original

    def clear_markers(self, table: str) -> None:
        s3 = self.admin.client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="ops", Prefix=f"markers/{table}/"):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket="ops", Key=obj["Key"])

    def fresh(self, table: str) -> None:
        """Neither the table nor anything under its markers folder."""
        self.drop_table(table)
        self.clear_markers(table)

    def drop_table(self, table: str) -> None:
        dynamodb = self.admin.client("dynamodb")
        if table in dynamodb.list_tables()["TableNames"]:
            dynamodb.delete_table(TableName=table)

    def create_table(self, table: str) -> None:
        self.admin.client("dynamodb").create_table(TableName=table, KeySchema=KEY_SCHEMA,
                                                   AttributeDefinitions=ATTRIBUTES, BillingMode="PAY_PER_REQUEST")

    def items(self, table: str) -> Dict[tuple, tuple]:
        found = {}
        for page in self.admin.client("dynamodb").get_paginator("scan").paginate(TableName=table):
            for it in page["Items"]:
                found[(it["eventId"]["S"], it["fingerprint"]["S"])] = (int(it["etlTime"]["N"]), int(it["ttl"]["N"]))
        return found

    def store(self, table: str) -> MarkerStore:
        return MarkerStore(parse_location(MARKERS), table, client=self.admin.client("s3"))

    def prove_each_action(self, policies: Dict[str, dict], reset: Callable[[], None], fake: Callable[[], object],
                          real: Callable[[], object], shown: Dict[str, str] = None,
                          not_needed: Set[str] = frozenset()) -> Dict[str, Set[str]]:
        """Drop every action in turn: {"pipeline": ..., "job": ..., "not needed": ...} as 'identity Sid action'.

        `shown`: actions another test showed needed, sent by the same code, with what sends them ("pipeline" or
        "job"): not dropped again. `not_needed`: actions expected not to be needed here, dropped all at once (if the
        command succeeds without all of them, it succeeds without any one: IAM only ever allows less with less).
        """
        shown = shown or {}
        found: Dict[str, Set[str]] = {"pipeline": set(), "job": set(), "not needed": set()}
        drops = list(each_action(policies))
        for drop in drops:
            name = " ".join(drop)
            if name in shown:
                found[shown[name]].add(name)
                continue
            if name in not_needed:
                continue
            reset()
            self.grant(policies, drop)
            done = fake()
            if done.returncode != 0:
                assert f"AWS denied {drop[2]} on " in last_error(done), f"dropping {name}: {last_error(done)}"
                found["pipeline"].add(name)
                continue
            found["job"].add(name)
            reset()
            done = real()
            assert done.returncode != 0, f"dropping {name}: the real command succeeded"
            assert f"AWS denied {drop[2]} on " in last_error(done), f"dropping {name}: {last_error(done)}"
        unused = [drop for drop in drops if " ".join(drop) in not_needed]
        if unused:
            reset()
            self.grant(policies, *unused)
            done = fake()
            assert done.returncode == 0, f"without {unused}: {last_error(done)}"
            found["not needed"] = {" ".join(drop) for drop in unused}
        reset()
        self.grant(policies)
        return found


def restore_environment(saved: Dict[str, object]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    boto3.setup_default_session()


def each_action(policies: Dict[str, dict]) -> Iterator[Drop]:
    for identity, document in policies.items():
        for statement in document["Statement"]:
            for action in statement["Action"]:
                yield identity, statement["Sid"], action


# Shown by test_write_fast_with_create_table's real command: the job reads the archive before it does anything
# else, in every mode and write mode (spark/reading.py), so dropping it elsewhere is not run again.
ARCHIVE_READ = {"default-chain ReadArchive s3:GetObject": "job"}
# Shown there too: fast mode's reads and VerifyManifest's are the same strongly consistent BatchGetItem requests
# (spark/dynamo.py, TableRequests.read_keys).
TABLE_READ = {"storage-config ManifestTable dynamodb:BatchGetItem": "job"}
# Not needed with moto, needed on AWS: there DynamoDB reads the staged items and writes its logs as ImportTable's
# caller (AWS's "Requesting a table import in DynamoDB"); moto's import does neither as the caller.
NOT_NEEDED = {f"storage-config {sid} {action}" for sid, action in (
    ("ImportListsStagedItems", "s3:ListBucket"), ("ImportReadsStagedItems", "s3:GetObject"))} | {
    f"storage-config ImportWritesItsLogs logs:{op}" for op in (
        "CreateLogGroup", "CreateLogStream", "DescribeLogGroups", "DescribeLogStreams", "PutLogEvents",
        "PutRetentionPolicy")}
MARKERS_ACTIONS = {"default-chain ListMarkers s3:ListBucket", "default-chain MarkersLeasesReports s3:GetObject",
                   "default-chain MarkersLeasesReports s3:PutObject"}
PLANNING = {"default-chain ListArchive s3:ListBucket", "storage-config ManifestTable dynamodb:DescribeTable",
            "storage-config ManifestTable dynamodb:DescribeTimeToLive"} | MARKERS_ACTIONS
# A populate's own requests (planning, leases, markers, reports), the same whatever its write mode (plan.py,
# lifecycle.py, leases.py): shown by test_write_fast_with_create_table.
POPULATE = PLANNING | {"default-chain MarkersLeasesReports s3:DeleteObject"}


@contextmanager
def enforcing(tmp: Path) -> Iterator[World]:
    """Its own moto server with IAM on: an administrator, "store" and "chain"; an archive of 2 runs x 10 events."""
    server, proc = iam.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ENDPOINT_URL"] = server.url
    try:
        server.user("store", [])
        server.user("chain", [])
        keys = {"admin": server.enforce(), **server.users}
        admin = boto3.session.Session(*keys["admin"], region_name="us-east-1")
        world = World(keys, admin, tmp, [], None)
        with world.as_user("admin"):
            world.runs, world.truth = make_archive(2, 10, seed=11)
        yield world
    finally:
        restore_environment(saved)
        stop(proc)


def backfill_exact(world: World, table: str, *args: str) -> None:
    """PopulateManifest, the real one, under exactly the policies: every item and every marker as they should be."""
    done = world.run("PopulateManifest", table, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert world.items(table) == world.truth.expected_items(now=time.time())
    assert world.store(table).done_runs() == set(world.runs)


def stage_items(spec) -> None:
    """What the import's staging job leaves: EVENTS items per run, gzip DynamoDB JSON under the spec's staging."""
    lines = b"".join(import_line(ManifestItem(f"{run}-{i:04d}", "f" * 32, 1_800_000_000, 1_900_000_000, run))
                     for run in spec.runs for i in range(EVENTS))
    storage.write_bytes(parse_location(spec.staging).child("part-00000.json.gz"), gzip.compress(lines))


def seed(world: World, table: str) -> Dict[tuple, tuple]:
    """The table and markers a populate of every run leaves (written as the administrator)."""
    world.create_table(table)
    expected = world.truth.expected_items(now=time.time())
    dynamodb = world.admin.client("dynamodb")
    for (event_id, fingerprint), (etl, ttl) in expected.items():
        dynamodb.put_item(TableName=table, Item=item_attributes(ManifestItem(event_id, fingerprint, etl, ttl, "")))
    for run in world.runs:
        world.store(table).mark(run, {"run": run})
    return expected
