"""The generated least-privilege IAM policies (pipeline/reports/iam_policy.py): which identity needs which action on
which resource, per runner, method, write mode and command; and the dry runs that print them and write nothing.
Whether they are enough and each action needed is proven against IAM in tests/test_iam_enforced.py."""
from __future__ import annotations

import json
import re
import time
from typing import Dict, Set

import boto3
import pytest

from bench.servers import free_port
from pipeline.configs.params import Params
from pipeline.orchestration.accounts import AwsFacts, caller_account
from pipeline.orchestration.context import load_context
from pipeline.reports.iam_policy import iam_policies, policy_lines
from spark.manifest import ATTRIBUTES, KEY_SCHEMA
from tests.cli import EXAMPLES, ROOT, ops_objects, populate_command, run_in_process, storage_config
from tests.graph import archive_of

ACCOUNT = "123456789012"
FACTS = AwsFacts(ACCOUNT, ACCOUNT, "eu-west-1")
TABLE_ARN = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/manifest"
MARKERS = "arn:aws:s3:::ops/markers/manifest/"
KEY_ID, SECRET = "AKIAIAMPOLICYTEST0001", "iam/policy+test-secret"


def policies(tmp_path, command: str = "populate", keys: bool = True, facts: AwsFacts = FACTS,
             count_events: bool = False, **params):
    emr = tuple(sorted(params.pop("emr", {}).items()))
    config = storage_config(tmp_path / "dynamodb.json", "manifest", KEY_ID if keys else None, SECRET if keys else None)
    p = Params(params.pop("enriched_archive", "s3://archive/enriched"), config, str(EXAMPLES / "resolver.json"),
               markers=params.pop("markers", "s3://ops/markers"), emr=emr, **params)
    return iam_policies(load_context(p), command, facts, count_events)


def actions(document: dict) -> Set[str]:
    return {a for s in document["Statement"] for a in s["Action"]}


def by_sid(document: dict) -> Dict[str, dict]:
    return {s["Sid"]: s for s in document["Statement"]}


def test_local_runner_with_keys_table_requests_to_the_keys_s3_to_the_default_chain(tmp_path):
    found = policies(tmp_path, create_table=True)
    docs = found.documents
    assert list(docs) == ["storage-config", "default-chain"]
    assert docs["storage-config"] == {"Version": "2012-10-17", "Statement": [{
        "Sid": "ManifestTable", "Effect": "Allow", "Resource": [TABLE_ARN],
        "Action": ["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:CreateTable",
                   "dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:UpdateTimeToLive"]}]}
    chain = by_sid(docs["default-chain"])
    assert list(chain) == ["ListArchive", "ReadArchive", "ListMarkers", "MarkersLeasesReports"]
    assert chain["ListArchive"]["Resource"] == ["arn:aws:s3:::archive"]
    assert chain["ListArchive"]["Condition"] == {"StringLike": {"s3:prefix": ["enriched/*"]}}
    assert chain["ReadArchive"] == {"Sid": "ReadArchive", "Effect": "Allow", "Action": ["s3:GetObject"],
                                    "Resource": ["arn:aws:s3:::archive/enriched/*"]}
    assert chain["ListMarkers"]["Condition"] == {"StringLike": {"s3:prefix": ["markers/manifest/*"]}}
    assert chain["MarkersLeasesReports"]["Action"] == ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    assert chain["MarkersLeasesReports"]["Resource"] == [MARKERS + "*"]
    assert found.who == {"storage-config": "the storage config's keys (dynamodb.json)",
                         "default-chain": "the default AWS credential chain"}
    assert found.notes == []


@pytest.mark.parametrize("command,params,job", [
    ("populate", {"write_mode": "fast"}, {"dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"}),
    ("populate", {"write_mode": "conditional"}, {"dynamodb:PutItem"}),
    ("clean", {}, {"dynamodb:DeleteItem"}),
    ("verify", {}, {"dynamodb:BatchGetItem"}),
])
def test_the_jobs_table_requests_follow_the_command_and_write_mode(tmp_path, command, params, job):
    docs = policies(tmp_path, command, **params).documents
    assert actions(docs["storage-config"]) == {"dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive"} | job
    markers = by_sid(docs["default-chain"])["MarkersLeasesReports"]["Action"]
    # verify holds no lease and never unmarks: it deletes nothing
    assert markers == (["s3:GetObject", "s3:PutObject"] if command == "verify"
                       else ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"])


def test_auth_null_sends_everything_with_the_default_chain(tmp_path):
    docs = policies(tmp_path, keys=False, write_mode="conditional").documents
    assert list(docs) == ["default-chain"]
    table = by_sid(docs["default-chain"])["ManifestTable"]
    assert table["Action"] == ["dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:PutItem"]
    assert table["Resource"] == [TABLE_ARN]


def test_local_folders_need_no_s3_permission(tmp_path):
    docs = policies(tmp_path, enriched_archive=str(tmp_path / "archive"), markers=str(tmp_path / "markers")).documents
    assert list(docs) == ["storage-config"]


def test_import_needs_import_table_describe_import_its_staged_items_and_logs(tmp_path):
    docs = policies(tmp_path, method="import").documents
    keys = by_sid(docs["storage-config"])
    assert keys["ManifestTable"]["Action"] == ["dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive",
                                               "dynamodb:ImportTable", "dynamodb:UpdateTimeToLive"]
    assert keys["DescribeImports"]["Resource"] == [TABLE_ARN + "/import/*"]
    assert keys["ImportReadsStagedItems"]["Resource"] == [MARKERS + "_import/*"]
    assert keys["ImportListsStagedItems"]["Condition"] == {"StringLike": {"s3:prefix": ["markers/manifest/_import/*"]}}
    assert keys["ImportWritesItsLogs"]["Resource"] == [f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws-dynamodb/*"]
    assert "logs:PutLogEvents" in keys["ImportWritesItsLogs"]["Action"]
    # with auth null the default chain imports: its markers statements already let it read the staged items
    chain = by_sid(policies(tmp_path, keys=False, method="import").documents["default-chain"])
    assert "ImportReadsStagedItems" not in chain and "ImportListsStagedItems" not in chain
    assert "dynamodb:ImportTable" in chain["ManifestTable"]["Action"]


def test_emr_runner_with_keys(tmp_path):
    found = policies(tmp_path, runner="emr", count_events=True)
    docs = found.documents
    assert list(docs) == ["storage-config", "default-chain", "emr-instance-profile"]
    chain = by_sid(docs["default-chain"])
    cluster = chain["EmrBackfillCluster"]
    assert cluster["Resource"] == [f"arn:aws:elasticmapreduce:eu-west-1:{ACCOUNT}:cluster/*"]
    tag = cluster["Condition"]["StringEquals"]
    assert list(tag) == ["elasticmapreduce:ResourceTag/manifest-populator:backfill"]
    assert "elasticmapreduce:TerminateJobFlows" in cluster["Action"]
    assert chain["EmrRunJobFlowHasNoResourceLevelPermissions"]["Resource"] == ["*"]
    assert chain["EmrListClustersHasNoResourceLevelPermissions"]["Action"] == ["elasticmapreduce:ListClusters"]
    assert chain["PassEmrRoles"] == {"Sid": "PassEmrRoles", "Effect": "Allow", "Action": ["iam:PassRole"],
                                     "Resource": [f"arn:aws:iam::{ACCOUNT}:role/EMR_DefaultRole",
                                                  f"arn:aws:iam::{ACCOUNT}:role/EMR_EC2_DefaultRole"]}
    assert chain["EncryptStagedCredentials"]["Action"] == ["kms:GenerateDataKey"]
    assert "StageJobCode" not in chain  # under the markers: MarkersLeasesReports already allows it
    cluster_side = by_sid(docs["emr-instance-profile"])
    assert cluster_side["ReadJobCode"]["Resource"] == [MARKERS + "_staging/job-code/*"]
    assert cluster_side["ReadBatchSpecs"]["Resource"] == [MARKERS + "_batches/*"]
    assert cluster_side["ReadStagedCredentials"]["Resource"] == [MARKERS + "_staging/credentials/*"]
    assert cluster_side["DecryptStagedCredentials"]["Action"] == ["kms:Decrypt"]
    assert cluster_side["WriteReports"]["Resource"] == [MARKERS + "_reports/*"]
    assert cluster_side["WriteClusterLogs"]["Resource"] == [MARKERS + "_staging/emr-logs/*"]
    assert cluster_side["CountEvents"]["Action"] == ["s3:GetObject", "s3:PutObject"]
    assert not any(a.startswith("dynamodb:") for a in actions(docs["emr-instance-profile"]))  # the staged keys do
    assert found.who["emr-instance-profile"] == "the EMR cluster's instance profile (EMR_EC2_DefaultRole)"


def test_emr_runner_auth_null_existing_cluster_own_job_code_and_logs(tmp_path):
    emr = {"cluster_id": "j-ABC123", "job_code_uri": "s3://code/populator", "log_uri": "s3://logs/emr",
           "bootstrap_actions": '["s3://code/bootstrap/tune.sh"]'}
    docs = policies(tmp_path, "verify", keys=False, runner="emr", emr=emr, profile="ops").documents
    chain = by_sid(docs["default-chain"])
    assert chain["EmrCluster"]["Resource"] == [f"arn:aws:elasticmapreduce:eu-west-1:{ACCOUNT}:cluster/j-ABC123"]
    assert "elasticmapreduce:TerminateJobFlows" not in actions(docs["default-chain"])  # never ours to end
    assert not {"elasticmapreduce:RunJobFlow", "elasticmapreduce:ListClusters", "iam:PassRole"} & \
        actions(docs["default-chain"])
    assert chain["StageJobCode"]["Resource"] == ["arn:aws:s3:::code/populator/*"]
    assert chain["StageCredentials"]["Action"] == ["s3:DeleteObject"]  # nothing staged, but always cleaned up
    assert "kms:GenerateDataKey" not in actions(docs["default-chain"])
    cluster_side = by_sid(docs["emr-instance-profile"])
    assert cluster_side["ReadJobCode"]["Resource"] == ["arn:aws:s3:::code/bootstrap/tune.sh",
                                                      "arn:aws:s3:::code/populator/*"]
    assert cluster_side["WriteClusterLogs"]["Resource"] == ["arn:aws:s3:::logs/emr/*"]
    assert cluster_side["ManifestTable"]["Action"] == ["dynamodb:BatchGetItem"]
    assert "ReadStagedCredentials" not in cluster_side


def test_an_unknown_account_is_a_wildcard_and_said(tmp_path):
    found = policies(tmp_path, runner="emr", facts=AwsFacts(None, None, None))
    table = by_sid(found.documents["storage-config"])["ManifestTable"]
    assert table["Resource"] == ["arn:aws:dynamodb:us-east-1:*:table/manifest"]
    assert any("STS GetCallerIdentity" in n for n in found.notes) and any("EMR" in n for n in found.notes)
    assert any("note: " in line for line in policy_lines(found))


@pytest.mark.parametrize("runner", ["local", "emr"])
@pytest.mark.parametrize("command,method", [("populate", "write"), ("populate", "import"), ("clean", "write"),
                                            ("verify", "write")])
def test_no_wildcard_action_no_unexplained_wildcard_resource_no_secret(tmp_path, command, method, runner):
    found = policies(tmp_path, command, runner=runner, method=method, create_table=True, count_events=True)
    for document in found.documents.values():
        assert document["Version"] == "2012-10-17"
        for statement in document["Statement"]:
            assert statement["Sid"].isalnum()
            assert all("*" not in action for action in statement["Action"]), statement
            if "*" in statement["Resource"]:
                assert "HasNoResourceLevelPermissions" in statement["Sid"], statement
    shown = json.dumps(found.documents) + "\n".join(policy_lines(found))
    assert KEY_ID not in shown and SECRET not in shown and KEY_ID[4:] not in shown


def test_dry_runs_print_the_policies_write_them_as_json_and_write_nothing(moto_reset, tmp_path):
    archive = archive_of(["2026-05-01-00-00-00", "2026-05-01-01-00-00"])
    boto3.client("dynamodb").create_table(TableName="manifest", KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES,
                                          BillingMode="PAY_PER_REQUEST")
    config = storage_config(tmp_path / "dynamodb.json", "manifest", KEY_ID, SECRET)
    before = ops_objects()
    for task, extra in (("PopulateManifest", ["--write-mode", "conditional"]),
                        ("CleanManifest", ["--runs", "2026-05-01-00-00-00"]), ("VerifyManifest", [])):
        out = tmp_path / f"{task}.json"
        done = run_in_process(populate_command(archive, config, "s3://ops/markers", "--dry-run", "--output-json",
                                               str(out), *extra, task=task))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "IAM permissions this command needs" in done.stdout and "Nothing was written" in done.stdout
        data = json.loads(out.read_text())
        assert data["dry_run"] is True and set(data["iam_policies"]) == {"storage-config", "default-chain"}
        job = {"PopulateManifest": "dynamodb:PutItem", "CleanManifest": "dynamodb:DeleteItem",
               "VerifyManifest": "dynamodb:BatchGetItem"}[task]
        assert job in actions(data["iam_policies"]["storage-config"])
        assert 'table/manifest"' in json.dumps(data["iam_policies"]) and f":{ACCOUNT}:" in out.read_text()
        assert KEY_ID not in done.stdout + done.stderr + out.read_text()
        assert SECRET not in done.stdout + done.stderr + out.read_text()
    assert data["runs_selected"] == [] and data["batches"] == []  # verify: no run is marked yet
    assert ops_objects() == before


def docs_blocks(kind: str) -> Dict[str, str]:
    """docs/iam.md's code blocks marked `<!-- iam-<kind>: name -->`, by name."""
    text = (ROOT / "docs" / "iam.md").read_text()
    return dict(re.findall(rf"<!-- iam-{kind}: ([\w-]+) -->\n```\w*\n(.*?)\n```", text, re.S))


def test_docs_show_the_policies_exactly_as_generated_for_their_example_values():
    examples = {"local-keys": ("dynamodb-2-0-0.json", {}), "auth-null": ("dynamodb-2-0-0-default-chain.json", {}),
                "emr": ("dynamodb-2-0-0.json", {"runner": "emr"})}
    generated = {}
    for name, (config, params) in examples.items():
        p = Params("s3://acme-snowplow/enriched/archive", str(EXAMPLES / config), str(EXAMPLES / "resolver.json"),
                   markers="s3://acme-ops/manifest-markers", **params)
        generated[name] = iam_policies(load_context(p), "populate", AwsFacts(ACCOUNT, ACCOUNT, "eu-west-1"))
    shown = docs_blocks("lines")
    assert set(shown) == set(examples)
    for name, found in generated.items():
        assert shown[name] == "\n".join(policy_lines(found)), name
    assert json.loads(docs_blocks("json")["local-keys"]) == generated["local-keys"].documents


def test_an_account_sts_cannot_tell_is_unknown_at_once(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    started = time.monotonic()
    assert caller_account(boto3.session.Session(region_name="us-east-1")) is None
    assert time.monotonic() - started < 5
