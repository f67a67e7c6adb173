"""The least-privilege IAM policies a command needs, one per identity that sends its requests.

Each path of a command (planning, leases and markers, the job, the EMR runner, the import) is declared below as
the botocore operations it sends, who sends them and on what; `spark.refusals.iam_action` names their IAM actions,
the names the one-line refusals use, so a denied request's line and the policy that grants it always agree.
Nothing here calls AWS: the accounts and the EMR region come in `AwsFacts` (orchestration/accounts.py), and an
account that could not be learnt is `*` in the ARNs, which the statement's Sid and the notes say.

Identities: "storage-config" (the storage config's keys, when it has keys: the pipeline's and the job's DynamoDB
requests), "default-chain" (the default credential chain, or --profile for the EMR runner: the pipeline's S3 and
EMR requests, the local job's S3, and DynamoDB when the config's auth is null), "emr-instance-profile" (what the
job does on an EMR cluster). No secret is ever part of a policy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from pipeline.configs.emr_settings import EmrSettings
from pipeline.orchestration.accounts import AwsFacts
from pipeline.orchestration.context import Context
from pipeline.runners.emr_requests import BACKFILL_TAG
from spark import refusals
from spark.storage import Location, parse_location

STORAGE_CONFIG, DEFAULT_CHAIN, INSTANCE_PROFILE = "storage-config", "default-chain", "emr-instance-profile"
IDENTITIES = (STORAGE_CONFIG, DEFAULT_CHAIN, INSTANCE_PROFILE)
COMMANDS = ("populate", "clean", "verify")
VERSION = "2012-10-17"
# The job's DynamoDB requests, per command and write mode (spark/writer.py, spark/maintenance.py).
JOB_TABLE_OPERATIONS = {("populate", "fast"): ("BatchGetItem", "BatchWriteItem"),
                        ("populate", "conditional"): ("PutItem",), ("clean", ""): ("DeleteItem",),
                        ("verify", ""): ("BatchGetItem",)}
# What DynamoDB does as the caller of ImportTable (AWS's "Requesting a table import"): logs under /aws-dynamodb/.
IMPORT_LOG_OPERATIONS = ("CreateLogGroup", "CreateLogStream", "DescribeLogGroups", "DescribeLogStreams",
                         "PutLogEvents", "PutRetentionPolicy")


@dataclass
class Grant:
    """Operations one identity sends to one service on these resources: a statement's worth (grants of one
    identity with the same Sid are merged, so their conditions must be the same)."""

    identity: str
    sid: str
    service: str  # botocore signing name: s3, dynamodb, elasticmapreduce, kms, iam, logs
    operations: Tuple[str, ...]
    resources: Tuple[str, ...]
    condition: Dict[str, Dict[str, List[str]]] = field(default_factory=dict)

    @property
    def actions(self) -> List[str]:
        return [refusals.iam_action(self.service, op) for op in self.operations]


@dataclass
class Policies:
    """The policy documents by identity, who each identity is, and what an operator should know about them."""

    documents: Dict[str, dict]
    who: Dict[str, str]
    notes: List[str]


def s3_objects(loc: Location, *sub: str) -> str:
    """The ARN of every object under `loc` (and `sub` folders)."""
    key = "/".join(p for p in (loc.key.strip("/"), *sub) if p)
    return f"arn:aws:s3:::{loc.bucket}/{key + '/' if key else ''}*"


def s3_listing(identity: str, sid: str, loc: Location, *sub: str) -> Grant:
    """ListObjectsV2 under `loc`: the bucket's ARN, limited by s3:prefix unless `loc` is the bucket's root."""
    key = "/".join(p for p in (loc.key.strip("/"), *sub) if p)
    condition = {"StringLike": {"s3:prefix": [f"{key}/*"]}} if key else {}
    return Grant(identity, sid, "s3", ("ListObjectsV2",), (f"arn:aws:s3:::{loc.bucket}",), condition)


@dataclass(frozen=True)
class Route:
    """What one command does and where, as the grants read it."""

    command: str
    method: str
    write_mode: str
    runner: str
    create_table: bool
    keys: bool  # the storage config has keys
    archive: Optional[Location]  # None: a local directory
    markers: Optional[Location]  # <markers>/<table>; None: a local directory
    table_arn: str
    count_events: bool

    @property
    def emr(self) -> bool:
        return self.runner == "emr"

    @property
    def importing(self) -> bool:
        return self.command == "populate" and self.method == "import"

    @property
    def table_client(self) -> str:
        """Who sends the pipeline's DynamoDB requests."""
        return STORAGE_CONFIG if self.keys else DEFAULT_CHAIN

    @property
    def job_table_client(self) -> str:
        return STORAGE_CONFIG if self.keys else (INSTANCE_PROFILE if self.emr else DEFAULT_CHAIN)

    @property
    def job_s3_client(self) -> str:
        return INSTANCE_PROFILE if self.emr else DEFAULT_CHAIN


def arn_account(account: Optional[str]) -> str:
    return account or "*"


def planning(path: Route) -> Iterator[Grant]:
    """Planning, leases, markers, reports and records: the pipeline's own requests (markers.py, leases.py,
    listing.py, lifecycle.py, table.py), with the default chain for S3 and the table's client for DynamoDB."""
    if path.archive:
        yield s3_listing(DEFAULT_CHAIN, "ListArchive", path.archive)
        if path.command == "populate":  # the dry run checks archived (GLACIER) objects for a restore (HEAD)
            yield Grant(DEFAULT_CHAIN, "ReadArchive", "s3", ("HeadObject",), (s3_objects(path.archive),))
    if path.markers:
        yield s3_listing(DEFAULT_CHAIN, "ListMarkers", path.markers)
        # verify holds no lease, never unmarks and never finds an earlier report of its per-invocation batch
        operations = ("GetObject", "PutObject") + (() if path.command == "verify" else ("DeleteObject",))
        yield Grant(DEFAULT_CHAIN, "MarkersLeasesReports", "s3", operations, (s3_objects(path.markers),))
    table = ("DescribeTable", "DescribeTimeToLive")
    if path.importing:
        table += ("UpdateTimeToLive",)
    elif path.command == "populate" and path.create_table:
        table += ("CreateTable", "UpdateTimeToLive")
    yield Grant(path.table_client, "ManifestTable", "dynamodb", table, (path.table_arn,))


def job(path: Route) -> Iterator[Grant]:
    """The Spark job (spark/): the archive, its reports (and import staging), the table."""
    who = path.job_s3_client
    if path.archive:
        yield s3_listing(who, "ListArchive", path.archive)
        yield Grant(who, "ReadArchive", "s3", ("GetObject",), (s3_objects(path.archive),))
    if path.emr and path.markers:  # the local job's reports are written by the default chain, granted above
        m = path.markers
        yield Grant(who, "ReadBatchSpecs", "s3", ("GetObject",), (s3_objects(m, "_batches"),))
        written = [s3_objects(m, "_reports")] + ([s3_objects(m, "_import")] if path.importing else [])
        yield Grant(who, "WriteReports", "s3", ("PutObject",), tuple(written))
        if path.keys:
            yield Grant(who, "ReadStagedCredentials", "s3", ("GetObject",), (s3_objects(m, "_staging", "credentials"),))
        if path.count_events:
            counts = (s3_objects(m, "_staging", "counts"),)
            yield Grant(who, "CountEvents", "s3", ("GetObject", "PutObject"), counts)
    if path.importing:
        return
    mode = path.write_mode if path.command == "populate" else ""
    yield Grant(path.job_table_client, "ManifestTable", "dynamodb", JOB_TABLE_OPERATIONS[(path.command, mode)],
                (path.table_arn,))


def importing(path: Route, region: str, account: Optional[str]) -> Iterator[Grant]:
    """ImportTable and DescribeImport (importing.py); DynamoDB reads the staged items and writes its logs as the
    caller, so the caller needs those too (AWS: "Requesting a table import in DynamoDB")."""
    who = path.table_client
    yield Grant(who, "ManifestTable", "dynamodb", ("ImportTable",), (path.table_arn,))
    yield Grant(who, "DescribeImports", "dynamodb", ("DescribeImport",), (f"{path.table_arn}/import/*",))
    if path.markers:
        yield s3_listing(who, "ImportListsStagedItems", path.markers, "_import")
        yield Grant(who, "ImportReadsStagedItems", "s3", ("GetObject",), (s3_objects(path.markers, "_import"),))
    logs = f"arn:aws:logs:{region}:{arn_account(account)}:log-group:/aws-dynamodb/*"
    yield Grant(who, "ImportWritesItsLogs", "logs", IMPORT_LOG_OPERATIONS, (logs,))


def emr_runner(path: Route, settings: EmrSettings, backfill_id: str, staging: Location, region: str,
               account: Optional[str]) -> Iterator[Grant]:
    """The EMR runner (runners/emr.py) as the default chain or --profile, and what the cluster's instance
    profile reads and writes for it beside the job (job code, bootstrap scripts, logs, staged credentials)."""
    acct = arn_account(account)
    clusters = f"arn:aws:elasticmapreduce:{region}:{acct}:cluster/"
    steps = ("DescribeCluster", "ListSteps", "AddJobFlowSteps", "DescribeStep")
    if settings.cluster_id:  # used as it is: never looked for, created nor terminated
        yield Grant(DEFAULT_CHAIN, "EmrCluster", "elasticmapreduce", steps, (clusters + settings.cluster_id,))
    else:
        tag = {"StringEquals": {f"elasticmapreduce:ResourceTag/{BACKFILL_TAG}": [backfill_id]}}
        yield Grant(DEFAULT_CHAIN, "EmrBackfillCluster", "elasticmapreduce", steps + ("TerminateJobFlows",),
                    (clusters + "*",), tag)
        yield Grant(DEFAULT_CHAIN, "EmrListClustersHasNoResourceLevelPermissions", "elasticmapreduce",
                    ("ListClusters",), ("*",))
        request = {"StringEquals": {f"elasticmapreduce:RequestTag/{BACKFILL_TAG}": [backfill_id]}}
        yield Grant(DEFAULT_CHAIN, "EmrRunJobFlowHasNoResourceLevelPermissions", "elasticmapreduce",
                    ("RunJobFlow",), ("*",), request)
        roles = tuple(f"arn:aws:iam::{acct}:role/{r}" for r in (settings.service_role, settings.job_flow_role))
        yield Grant(DEFAULT_CHAIN, "PassEmrRoles", "iam", ("PassRole",), roles)
    code = parse_location(settings.job_code_uri) if settings.job_code_uri else staging.child("job-code")
    yield Grant(DEFAULT_CHAIN, "StageJobCode", "s3", ("HeadObject", "PutObject"), (s3_objects(code),))
    staged = ("PutObject", "DeleteObject") if path.keys else ("DeleteObject",)  # deleted when the backfill ends
    yield Grant(DEFAULT_CHAIN, "StageCredentials", "s3", staged, (s3_objects(staging, "credentials"),))
    if path.count_events:  # the dry run's count: its spec and reports, deleted once read
        counts = staging.child("counts")
        operations = ("PutObject", "GetObject", "DeleteObject")
        yield Grant(DEFAULT_CHAIN, "CountEvents", "s3", operations, (s3_objects(counts),))
        yield s3_listing(DEFAULT_CHAIN, "ListCounts", counts)
    if path.markers:  # the runner reads back the spec it staged and lists the step's reports
        yield Grant(DEFAULT_CHAIN, "ReadBatchSpecs", "s3", ("GetObject",), (s3_objects(path.markers, "_batches"),))
        yield s3_listing(DEFAULT_CHAIN, "ListReports", path.markers, "_reports")
    read = [s3_objects(code)] + [_object_arn(b["ScriptBootstrapAction"]["Path"]) for b in settings.bootstrap_actions]
    yield Grant(INSTANCE_PROFILE, "ReadJobCode", "s3", ("GetObject",), tuple(read))
    logs = parse_location(settings.log_uri) if settings.log_uri else staging.child("emr-logs")
    yield Grant(INSTANCE_PROFILE, "WriteClusterLogs", "s3", ("PutObject",), (s3_objects(logs),))
    if path.keys:  # staged with SSE-KMS under the aws/s3 key, whose id is not known before S3 uses it
        via_s3 = {"StringLike": {"kms:ViaService": ["s3.*.amazonaws.com"]}}
        key = (f"arn:aws:kms:*:{acct}:key/*",)  # the aws/s3 key of the staging bucket's region
        yield Grant(DEFAULT_CHAIN, "EncryptStagedCredentials", "kms", ("GenerateDataKey",), key, via_s3)
        yield Grant(INSTANCE_PROFILE, "DecryptStagedCredentials", "kms", ("Decrypt",), key, via_s3)


def _object_arn(uri: str) -> str:
    loc = parse_location(uri)
    return f"arn:aws:s3:::{loc.bucket}/{loc.key}"


def grants(ctx: Context, command: str, facts: AwsFacts, count_events: bool = False) -> List[Grant]:
    """Every grant of `command` (populate, clean or verify) with this context's settings."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    p, config = ctx.params, ctx.config
    table_arn = f"arn:aws:dynamodb:{config.region}:{arn_account(facts.table_account)}:table/{config.table}"
    path = Route(command, p.method, p.write_mode, p.runner, p.create_table, config.access_key_id is not None,
                ctx.archive if ctx.archive.is_s3 else None, ctx.store.folder if ctx.store.folder.is_s3 else None,
                table_arn, count_events and p.runner == "emr")
    found = list(planning(path)) + list(job(path))
    if path.importing:
        found += importing(path, config.region, facts.table_account)
    if path.emr:
        settings = EmrSettings.from_mapping(ctx.emr or {})
        found += emr_runner(path, settings, ctx.backfill_id, ctx.store.staging(), facts.emr_region or "*",
                            facts.emr_account)
    return found


def covers(pattern: str, value: str) -> bool:
    """Whether an IAM pattern ending in `*` (or an exact value) matches `value`."""
    return pattern == value or (pattern.endswith("*") and value.startswith(pattern[:-1]))


def covered(g: Grant, by: Grant) -> bool:
    """Whether `by` allows everything `g` does: the same identity and service, its actions, resources that match
    `g`'s, and each of its conditions met by `g`'s own."""
    if by.identity != g.identity or by.service != g.service or not set(g.actions) <= set(by.actions):
        return False
    if not all(any(covers(p, r) for p in by.resources) for r in g.resources):
        return False
    for operator, keys in by.condition.items():
        for key, patterns in keys.items():
            values = g.condition.get(operator, {}).get(key)
            if not values or not all(any(covers(p, v) for p in patterns) for v in values):
                return False
    return True


def pruned(mine: List[Grant]) -> List[Grant]:
    """Without the grants another one already allows (of two that allow each other, the first stays)."""
    return [g for i, g in enumerate(mine)
            if not any(covered(g, other) and (j < i or not covered(other, g))
                       for j, other in enumerate(mine) if j != i)]


def statements(found: List[Grant], identity: str) -> List[dict]:
    """The identity's grants as IAM statements: one per Sid, actions and resources sorted, none that another
    statement already allows."""
    merged: Dict[str, dict] = {}
    for g in pruned([g for g in found if g.identity == identity]):
        statement = merged.setdefault(g.sid, {"Sid": g.sid, "Effect": "Allow", "Action": [], "Resource": [],
                                              "Condition": g.condition})
        if statement["Condition"] != g.condition:
            raise ValueError(f"grants {g.sid} of {identity} differ in their conditions")
        statement["Action"] = sorted(set(statement["Action"]) | set(g.actions))
        statement["Resource"] = sorted(set(statement["Resource"]) | set(g.resources))
    for statement in merged.values():
        if not statement["Condition"]:
            del statement["Condition"]
    return list(merged.values())


def iam_policies(ctx: Context, command: str, facts: AwsFacts, count_events: bool = False) -> Policies:
    """The policy document of every identity `command` uses with this context, who they are, and notes."""
    found = grants(ctx, command, facts, count_events)
    documents = {}
    for identity in IDENTITIES:
        found_here = statements(found, identity)
        if found_here:
            documents[identity] = {"Version": VERSION, "Statement": found_here}
    p = ctx.params
    chain = refusals.DEFAULT_CHAIN
    if p.runner == "emr" and p.profile:
        chain += f" (and {refusals.profile_identity(p.profile)} for EMR and its staging)"
    settings = EmrSettings.from_mapping(ctx.emr or {}) if p.runner == "emr" else None
    who = {STORAGE_CONFIG: refusals.keys_identity(os.path.basename(p.storage_config)), DEFAULT_CHAIN: chain,
           INSTANCE_PROFILE: refusals.instance_profile_identity(settings.job_flow_role if settings else "?")}
    return Policies(documents, {k: who[k] for k in documents}, notes(ctx, facts))


def notes(ctx: Context, facts: AwsFacts) -> List[str]:
    """What the operator must know to use the policies as printed."""
    found = []
    if facts.table_account is None:
        found.append("the account of the identity that sends DynamoDB requests could not be learnt (STS "
                     "GetCallerIdentity): table ARNs hold '*' for it; put your account id there")
    if ctx.params.runner == "emr" and (facts.emr_account is None or facts.emr_region is None):
        found.append("the EMR account or region could not be learnt: EMR, IAM and KMS ARNs hold '*' for it")
    return found


def policy_lines(policies: Policies) -> List[str]:
    """The policies for the console: one line per statement, `Sid: actions on resources [condition]`."""
    lines = ["IAM permissions this command needs, per identity (as policy documents: 'iam_policies' in "
             "--output-json; docs/iam.md):"]
    for identity, document in policies.documents.items():
        lines.append(f"  {identity}: {policies.who[identity]}")
        for s in document["Statement"]:
            where = ""
            for operator, keys in s.get("Condition", {}).items():
                where += "".join(f" if {k} {operator} {' or '.join(v)}" for k, v in keys.items())
            lines.append(f"    {s['Sid']}: {', '.join(s['Action'])} on {', '.join(s['Resource'])}{where}")
    return lines + [f"  note: {n}" for n in policies.notes]


def with_policies(text: str, data: dict, policies: Policies) -> str:
    """A dry run's text and data with the policies: the lines appended, `iam_policies` (and `iam_notes`) set."""
    data["iam_policies"] = policies.documents
    data["iam_notes"] = policies.notes
    return text + "\n\n" + "\n".join(policy_lines(policies))
