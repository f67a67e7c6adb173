"""The EMR runner against in-process moto: cluster lifecycle, step submission and adoption, failures, secrets.

moto never runs a step, so tests force step states in its backend; it also drops AutoTerminationPolicy, so the
arguments EMR receives are captured from botocore's parameter events, i.e. exactly what would go on the wire.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends
from moto.s3.models import s3_backends

from pipeline.configs.emr_settings import EmrSettings
from pipeline.rules.errors import PipelineError
from pipeline.runners import jobcode
from pipeline.runners.emr import EmrRunner, session_for
from pipeline.runners.emr_requests import BACKFILL_TAG, STEP_ARGS_LIMIT, cluster_request, step_request
from spark.spec import BatchSpec
from spark.storage import parse_location

REGION = "eu-west-1"
BUCKET = "acme-ops"
STAGING = parse_location(f"s3://{BUCKET}/manifest-staging/bf-2026")
CANARY_KEY = "AKIACANARYK3Y9Q7ZX"
CANARY_SECRET = "canary/s3cr3t+Qw7Er9Ty1Ui3Op5As7Df9Gh"


@pytest.fixture
def aws(monkeypatch):
    """In-process moto with a staging bucket; every AWS request's parameters are recorded."""
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_EMR", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        s3 = session.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        calls = []

        def record(params, model, **kwargs):
            calls.append((model.name, copy.deepcopy(params)))

        session.events.register("provide-client-params", record)
        yield SimpleNamespace(session=session, s3=s3, calls=calls, emr=session.client("emr"))


def ops(aws, name):
    return [params for op, params in aws.calls if op == name]


def runner(aws, settings=None, backfill="bf-2026", sleeps=None, on_sleep=None, poll=(5, 60)):
    """A runner whose sleep records the delay and calls `on_sleep(n)` (n = polls so far) instead of waiting."""
    slept = [] if sleeps is None else sleeps

    def sleep(seconds):
        slept.append(seconds)
        assert len(slept) < 50, "the step never ended"
        if on_sleep:
            on_sleep(len(slept))

    return EmrRunner(settings or EmrSettings(), backfill, STAGING, aws.session, poll_seconds=poll, sleep=sleep)


def write_spec(aws, batch_id="b-0001", runs=("2026-05-01-00-00-00", "2026-05-01-01-00-00"), credentials=None):
    spec = BatchSpec(batch_id=batch_id, archive="s3://acme-snowplow/enriched/archive", runs=list(runs),
                     reports=STAGING.child("reports", batch_id).uri, table="manifest", region=REGION,
                     credentials=credentials)
    loc = STAGING.child("specs", f"{batch_id}.json")
    aws.s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=spec.to_json().encode())
    return loc.uri


def backend_step(cluster_id, step_id):
    cluster = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_id]
    return next(s for s in cluster.steps if s.id == step_id)


def force_step(cluster_id, step_id, state, failure=None):
    """Set a step's state in moto's backend; `failure` becomes the FailureDetails EMR would report."""
    step = backend_step(cluster_id, step_id)
    step.state = state
    if failure is not None:
        step.Status = dict(step.status, FailureDetails=failure)  # moto serialises `Status` before `status`


def cluster_state(aws, cluster_id):
    return aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]


def quiet(*args):
    pass


def complete_on_first_sleep(cluster_id_of):
    """A sleep hook that finishes the only step of the cluster, so a run_batch returns after one poll."""
    def hook(n):
        cid = cluster_id_of()
        step = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[cid].steps[-1]
        step.state = "COMPLETED"
    return hook


# -- cluster ----------------------------------------------------------------------------------------------------

def test_cluster_creation_arguments(aws):
    settings = EmrSettings.from_mapping({
        "release_label": "emr-7.5.0", "master_instance_type": "m5.2xlarge", "core_instance_type": "r5.2xlarge",
        "core_instance_count": "5", "subnet_id": "subnet-0abc", "key_name": "ops-key", "idle_timeout_seconds": "1800",
        "tags": '{"team": "data"}', "log_uri": "s3://acme-logs/emr/", "step_concurrency": "3",
        "bootstrap_actions": '[{"name": "tune", "path": "s3://acme-ops/bs/tune.sh", "args": ["--fast"]}]',
    })
    cluster_id = runner(aws, settings).ensure_cluster()
    (request,) = ops(aws, "RunJobFlow")
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 1800}
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["Instances"]["TerminationProtected"] is False
    assert request["Instances"]["Ec2SubnetId"] == "subnet-0abc" and request["Instances"]["Ec2KeyName"] == "ops-key"
    master, core = request["Instances"]["InstanceGroups"]
    assert (master["InstanceRole"], master["InstanceType"], master["InstanceCount"]) == ("MASTER", "m5.2xlarge", 1)
    assert (core["InstanceRole"], core["InstanceType"], core["InstanceCount"], core["Market"]) == \
        ("CORE", "r5.2xlarge", 5, "ON_DEMAND")
    assert (request["ServiceRole"], request["JobFlowRole"]) == ("EMR_DefaultRole", "EMR_EC2_DefaultRole")
    assert request["ReleaseLabel"] == "emr-7.5.0" and request["Applications"] == [{"Name": "Spark"}]
    assert request["VisibleToAllUsers"] is True and request["StepConcurrencyLevel"] == 3
    assert request["BootstrapActions"] == [{"Name": "tune", "ScriptBootstrapAction": {
        "Path": "s3://acme-ops/bs/tune.sh", "Args": ["--fast"]}}]
    cluster = aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Name"] == "manifest-populator bf-2026" and cluster["LogUri"] == "s3://acme-logs/emr/"
    assert cluster["VisibleToAllUsers"] is True and cluster["Status"]["State"] == "WAITING"
    assert {t["Key"]: t["Value"] for t in cluster["Tags"]} == {"team": "data", BACKFILL_TAG: "bf-2026"}


def test_log_uri_defaults_to_staging(aws):
    runner(aws).ensure_cluster()
    assert ops(aws, "RunJobFlow")[0]["LogUri"] == f"{STAGING.uri}/emr-logs/"


def test_resumed_run_adopts_the_alive_cluster_of_its_backfill(aws):
    first = runner(aws).ensure_cluster()
    assert runner(aws).ensure_cluster() == first  # a new process of the same backfill
    assert len(ops(aws, "RunJobFlow")) == 1
    other = runner(aws, backfill="bf-other").ensure_cluster()
    assert other != first and len(ops(aws, "RunJobFlow")) == 2
    same_process = runner(aws)
    assert same_process.ensure_cluster() == first
    aws.emr.terminate_job_flows(JobFlowIds=[first])  # e.g. idle auto-termination while nobody was running
    again = runner(aws).ensure_cluster()
    assert again not in (first, other) and len(ops(aws, "RunJobFlow")) == 3
    assert same_process.ensure_cluster() == again  # a process holding the dead id moves on to the live cluster


def test_same_name_without_the_backfill_tag_is_not_adopted(aws):
    request = cluster_request(EmrSettings(), "manifest-populator bf-2026", "someone-else", "s3://b/l/")
    foreign = aws.emr.run_job_flow(**request)["JobFlowId"]
    assert runner(aws).ensure_cluster() != foreign


def test_configured_cluster_is_used_and_never_terminated(aws):
    existing = aws.emr.run_job_flow(**cluster_request(EmrSettings(), "shared", "x", "s3://b/l/"))["JobFlowId"]
    run = runner(aws, EmrSettings(cluster_id=existing))
    assert run.ensure_cluster() == existing
    run.finish(success=True)
    assert cluster_state(aws, existing) == "WAITING"
    assert len(ops(aws, "RunJobFlow")) == 1 and not ops(aws, "TerminateJobFlows")
    aws.emr.terminate_job_flows(JobFlowIds=[existing])
    with pytest.raises(PipelineError, match=f"cluster {existing} is TERMINATED"):
        runner(aws, EmrSettings(cluster_id=existing)).ensure_cluster()


def test_finish_terminates_on_success_only_and_deletes_the_credentials_either_way(aws):
    run = runner(aws)
    cluster_id = run.ensure_cluster()
    run.stage_credentials({"accessKeyId": CANARY_KEY, "secretAccessKey": CANARY_SECRET})
    run.finish(success=False)
    assert cluster_state(aws, cluster_id) == "WAITING"  # for a resumed run to adopt
    assert aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=STAGING.child("credentials").key)["KeyCount"] == 0
    run.stage_credentials({"accessKeyId": CANARY_KEY, "secretAccessKey": CANARY_SECRET})  # the resumed run's batch
    runner(aws).finish(success=True)  # a resumed run's process finds the cluster by name and tag
    assert cluster_state(aws, cluster_id) == "TERMINATED"
    assert aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=STAGING.child("credentials").key)["KeyCount"] == 0


def test_python_packages_are_installed_by_a_bootstrap_action(aws):
    runner(aws, EmrSettings(python_packages=["ujson==5.10.0"])).ensure_cluster()
    (action,) = ops(aws, "RunJobFlow")[0]["BootstrapActions"]
    script = parse_location(action["ScriptBootstrapAction"]["Path"])
    assert action["ScriptBootstrapAction"]["Args"] == ["ujson==5.10.0"]
    body = aws.s3.get_object(Bucket=script.bucket, Key=script.key)["Body"].read()
    assert body.startswith(b"#!/bin/bash") and b'pip install --quiet "$@"' in body


# -- job code and credentials -----------------------------------------------------------------------------------

def test_job_code_is_uploaded_once(aws):
    zip_uri, entry_uri = runner(aws).stage_job_code()
    assert [p["Key"] for p in ops(aws, "PutObject")] == [parse_location(zip_uri).key, parse_location(entry_uri).key]
    assert zip_uri.startswith(f"{STAGING.uri}/job-code/") and zip_uri.endswith(".zip")
    assert entry_uri.endswith("/populate.py")
    aws.calls.clear()
    assert runner(aws).stage_job_code() == (zip_uri, entry_uri)  # another process, same code
    assert not ops(aws, "PutObject")


def test_user_supplied_job_code_location(aws):
    zip_uri, entry_uri = runner(aws, EmrSettings(job_code_uri=f"s3://{BUCKET}/my-code")).stage_job_code()
    assert zip_uri.startswith(f"s3://{BUCKET}/my-code/") and entry_uri.startswith(f"s3://{BUCKET}/my-code/")


def test_staged_credentials_are_encrypted_and_cleaned_up(aws):
    run = runner(aws)
    assert run.stage_credentials(None) is None and not ops(aws, "PutObject")
    uri = run.stage_credentials({"accessKeyId": CANARY_KEY, "secretAccessKey": CANARY_SECRET})
    loc = parse_location(uri)
    assert CANARY_KEY not in uri and CANARY_SECRET not in uri
    assert ops(aws, "PutObject")[0]["ServerSideEncryption"] == "aws:kms"
    assert aws.s3.head_object(Bucket=loc.bucket, Key=loc.key)["ServerSideEncryption"] == "aws:kms"
    body = json.loads(aws.s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read())
    assert body == {"accessKeyId": CANARY_KEY, "secretAccessKey": CANARY_SECRET}
    runner(aws).cleanup_credentials()
    assert aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=loc.key)["KeyCount"] == 0


# -- steps ------------------------------------------------------------------------------------------------------

def test_step_submission_carries_no_secret(aws):
    run = runner(aws, sleeps=[], on_sleep=complete_on_first_sleep(lambda: run.cluster_id))
    credentials = run.stage_credentials({"accessKeyId": CANARY_KEY, "secretAccessKey": CANARY_SECRET})
    spec_uri = write_spec(aws, credentials=credentials)
    outcome = run.run_batch("b-0001", spec_uri, quiet, quiet)
    assert outcome.ok
    (submitted,) = ops(aws, "AddJobFlowSteps")
    (step,) = submitted["Steps"]
    zip_uri, entry_uri = run.stage_job_code()
    assert step["Name"] == "manifest-populator b-0001" and step["ActionOnFailure"] == "CONTINUE"
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    assert step["HadoopJarStep"]["Args"] == ["spark-submit", "--deploy-mode", "cluster", "--py-files", zip_uri,
                                             entry_uri, "--spec", spec_uri]
    assert sum(len(a) for a in step["HadoopJarStep"]["Args"]) < STEP_ARGS_LIMIT
    # Nothing EMR was told or can tell anyone holds a secret.
    emr_requests = json.dumps([params for op, params in aws.calls if op != "PutObject"], default=str)
    described = json.dumps([aws.emr.describe_cluster(ClusterId=run.cluster_id),
                            aws.emr.list_steps(ClusterId=run.cluster_id),
                            aws.emr.list_bootstrap_actions(ClusterId=run.cluster_id),
                            aws.s3.list_objects_v2(Bucket=BUCKET)], default=str)
    for canary in (CANARY_KEY, CANARY_SECRET, "s3cr3t"):
        assert canary not in emr_requests and canary not in described


def test_step_arguments_over_the_limit_are_refused(aws):
    run = runner(aws, EmrSettings(spark_submit_args=["--conf", "spark.x=" + "y" * STEP_ARGS_LIMIT]))
    with pytest.raises(PipelineError, match="over EMR's 10240"):
        run.run_batch("b-0001", write_spec(aws), quiet, quiet)
    assert not ops(aws, "AddJobFlowSteps")


def test_unknown_profile_fails_in_one_line():
    with pytest.raises(PipelineError, match=r"^\[emr\] profile: AWS profile 'no-such-profile' is not configured$"):
        session_for(EmrSettings(profile="no-such-profile"))


def test_staging_and_spec_must_be_in_s3(aws, tmp_path):
    with pytest.raises(PipelineError, match="not an s3:// location"):
        EmrRunner(EmrSettings(), "bf", parse_location(str(tmp_path)), aws.session)
    with pytest.raises(PipelineError, match="must be in S3"):
        runner(aws).run_batch("b-0001", str(tmp_path / "spec.json"), quiet, quiet)


def submitted_step(aws, run, batch_id="b-0001"):
    """Submit a batch's step the way a previous (interrupted) run did, without waiting for it."""
    cluster_id = run.ensure_cluster()
    zip_uri, entry_uri = run.stage_job_code()
    args = jobcode.emr_step_args(zip_uri, entry_uri, write_spec(aws, batch_id), [])
    step_id = aws.emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step_request(batch_id, args)])
    return cluster_id, step_id["StepIds"][0]


@pytest.mark.parametrize("state", ["RUNNING", "PENDING"])
def test_active_step_is_adopted_not_resubmitted(aws, state):
    cluster_id, step_id = submitted_step(aws, runner(aws))
    force_step(cluster_id, step_id, state)
    aws.calls.clear()
    sleeps = []
    resumed = runner(aws, sleeps=sleeps, on_sleep=lambda n: force_step(cluster_id, step_id, "COMPLETED"))
    outcome = resumed.run_batch("b-0001", write_spec(aws), quiet, quiet)
    assert outcome.ok and outcome.job_id == step_id
    assert not ops(aws, "AddJobFlowSteps") and not ops(aws, "RunJobFlow")
    assert len(sleeps) == 1


def test_same_name_with_another_spec_is_not_adopted(aws):
    """On a shared cluster a step of the same name may be another backfill's batch: only our spec is adopted."""
    run = runner(aws, on_sleep=complete_on_first_sleep(lambda: run.cluster_id))
    cluster_id, step_id = submitted_step(aws, run)
    force_step(cluster_id, step_id, "RUNNING")
    other_spec = STAGING.child("other-table", "b-0001.json").uri
    aws.s3.put_object(Bucket=BUCKET, Key=parse_location(other_spec).key,
                      Body=aws.s3.get_object(Bucket=BUCKET, Key=parse_location(write_spec(aws)).key)["Body"].read())
    aws.calls.clear()
    outcome = run.run_batch("b-0001", other_spec, quiet, quiet)
    assert outcome.ok and outcome.job_id != step_id and len(ops(aws, "AddJobFlowSteps")) == 1


def test_completed_step_is_not_resubmitted(aws):
    cluster_id, step_id = submitted_step(aws, runner(aws))
    force_step(cluster_id, step_id, "COMPLETED")
    aws.calls.clear()
    sleeps = []
    outcome = runner(aws, sleeps=sleeps).run_batch("b-0001", write_spec(aws), quiet, quiet)
    assert outcome.ok and outcome.job_id == step_id and "COMPLETED" in outcome.detail
    assert not ops(aws, "AddJobFlowSteps") and sleeps == []
    again = runner(aws, sleeps=[], on_sleep=complete_on_first_sleep(lambda: cluster_id))
    outcome = again.run_batch("b-0001", write_spec(aws), quiet, quiet, resubmit_completed=True)
    assert outcome.ok and outcome.job_id != step_id and len(ops(aws, "AddJobFlowSteps")) == 1


def fail_latest_step(state, failure=None):
    """A sleep hook: the cluster's newest step ends in `state` while it is being polled."""
    def hook(n):
        for cluster in emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters.values():
            if cluster.steps:
                force_step(cluster.id, cluster.steps[-1].id, state, failure and failure(cluster.id))
    return hook


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED", "INTERRUPTED"])
def test_failed_states_give_failure_details_and_logs(aws, state):
    def failure(cluster_id):
        return {"Reason": "Application failed", "Message": "Exception in thread main\njava.lang.OutOfMemoryError",
                "LogFile": f"s3://acme-logs/emr/{cluster_id}/steps/stderr.gz"}

    run = runner(aws, on_sleep=fail_latest_step(state, failure))
    outcome = run.run_batch("b-0001", write_spec(aws), quiet, quiet)
    assert not outcome.ok
    assert outcome.detail == (f"step {outcome.job_id} {state}: Application failed: Exception in thread main "
                              f"java.lang.OutOfMemoryError (logs: s3://acme-logs/emr/{run.cluster_id}/steps/stderr.gz)")


def test_failure_without_details_points_at_the_step_log_folder(aws):
    run = runner(aws, on_sleep=fail_latest_step("FAILED"))
    outcome = run.run_batch("b-0001", write_spec(aws), quiet, quiet)
    assert not outcome.ok and "\n" not in outcome.detail
    step_id = outcome.job_id
    assert outcome.detail.endswith(f"(logs: {STAGING.uri}/emr-logs/{run.cluster_id}/steps/{step_id}/)")


def test_a_failed_step_is_submitted_again_by_a_rerun(aws):
    cluster_id, step_id = submitted_step(aws, runner(aws))
    force_step(cluster_id, step_id, "FAILED")
    aws.calls.clear()
    outcome = runner(aws, on_sleep=complete_on_first_sleep(lambda: cluster_id)).run_batch(
        "b-0001", write_spec(aws), quiet, quiet)
    assert outcome.ok and outcome.job_id != step_id and len(ops(aws, "AddJobFlowSteps")) == 1


def test_step_cancelled_by_a_dying_cluster_names_the_cluster(aws):
    def die(n):
        cluster = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[run.cluster_id]
        force_step(cluster.id, cluster.steps[-1].id, "CANCELLED")
        cluster.terminate()
        cluster.last_state_change_reason = "Bootstrap failure"

    run = runner(aws, on_sleep=die)
    outcome = run.run_batch("b-0001", write_spec(aws), quiet, quiet)
    assert not outcome.ok and outcome.detail.endswith(f"; cluster {run.cluster_id} TERMINATED: Bootstrap failure")


def test_polling_backs_off_and_reports_progress(aws):
    batch_runs = ("2026-05-01-00-00-00", "2026-05-01-01-00-00")
    spec_uri = write_spec(aws, runs=batch_runs)
    reports = STAGING.child("reports", "b-0001")
    messages, urls, sleeps = [], [], []

    def on_sleep(n):
        cluster = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[run.cluster_id]
        step = cluster.steps[-1]
        if n == 2:
            aws.s3.put_object(Bucket=BUCKET, Key=reports.child(f"run={batch_runs[0]}.json").key, Body=b"{}")
        if n == 5:
            step.state = "COMPLETED"

    # A report left by an earlier attempt (written before the step was created) is not progress of this step.
    stale = reports.child(f"run={batch_runs[1]}.json").key
    aws.s3.put_object(Bucket=BUCKET, Key=stale, Body=b"{}")
    s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[BUCKET].keys[stale].last_modified = datetime(2026, 1, 1)
    run = runner(aws, sleeps=sleeps, on_sleep=on_sleep, poll=(5, 20))
    outcome = run.run_batch("b-0001", spec_uri, lambda m, p: messages.append((m, p)), urls.append)
    assert outcome.ok
    assert sleeps == [5, 10, 20, 20, 20]
    step_id = outcome.job_id
    assert urls == [f"https://{REGION}.console.aws.amazon.com/emr/home?region={REGION}#/clusterDetails/"
                    f"{run.cluster_id}"]
    assert all(f"EMR cluster {run.cluster_id} step {step_id} " in m and " elapsed, " in m for m, _ in messages)
    assert [p for _, p in messages] == [0.0, 0.0, 50.0, 50.0, 50.0, 100.0]
    assert "RUNNING" in messages[0][0] and "0/2 runs reported" in messages[0][0]
    assert "1/2 runs reported" in messages[2][0] and "COMPLETED" in messages[-1][0]
