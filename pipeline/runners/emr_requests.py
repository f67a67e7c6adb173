"""What the runner sends to EMR and reads back: names, RunJobFlow and AddJobFlowSteps arguments, failure text.

Pure: built from the settings and ids alone, so every request can be checked without AWS.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from pipeline.configs.emr_settings import EmrSettings
from pipeline.rules.errors import PipelineError
from spark.errors import one_line

STEP_ARGS_LIMIT = 10240  # EMR's cap on the total length of a step's arguments
BACKFILL_TAG = "manifest-populator:backfill"


def cluster_name(backfill_id: str) -> str:
    return f"manifest-populator {backfill_id}"


def step_name(batch_id: str) -> str:
    return f"manifest-populator {batch_id}"


def console_url(region: str, cluster_id: str) -> str:
    """The cluster's page in the EMR console, whose Steps tab lists the step (steps have no page of their own)."""
    return f"https://{region}.console.aws.amazon.com/emr/home?region={region}#/clusterDetails/{cluster_id}"


def cluster_request(settings: EmrSettings, name: str, backfill_id: str, log_uri: str,
                    extra_bootstrap: Optional[List[Dict]] = None) -> Dict:
    """RunJobFlow's arguments: kept alive between batches, but always with an idle timeout."""
    groups = [{"Name": "master", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
               "InstanceType": settings.master_instance_type, "InstanceCount": settings.master_instance_count}]
    if settings.core_instance_count:
        core = {"Name": "core", "InstanceRole": "CORE", "Market": settings.core_market,
                "InstanceType": settings.core_instance_type, "InstanceCount": settings.core_instance_count}
        if settings.core_market == "SPOT" and settings.core_bid_price:
            core["BidPrice"] = settings.core_bid_price
        groups.append(core)
    instances: Dict[str, Any] = {"InstanceGroups": groups, "KeepJobFlowAliveWhenNoSteps": True,
                                 "TerminationProtected": False}
    if settings.subnet_id:
        instances["Ec2SubnetId"] = settings.subnet_id
    elif settings.availability_zone:
        instances["Placement"] = {"AvailabilityZone": settings.availability_zone}
    if settings.key_name:
        instances["Ec2KeyName"] = settings.key_name
    tags = dict(settings.tags, **{BACKFILL_TAG: backfill_id})
    request = {
        "Name": name,
        "LogUri": log_uri,
        "ReleaseLabel": settings.release_label,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "BootstrapActions": list(settings.bootstrap_actions) + list(extra_bootstrap or []),
        "ServiceRole": settings.service_role,
        "JobFlowRole": settings.job_flow_role,
        "VisibleToAllUsers": True,
        "AutoTerminationPolicy": {"IdleTimeout": settings.idle_timeout_seconds},
        "StepConcurrencyLevel": settings.step_concurrency,
        "Tags": [{"Key": k, "Value": tags[k]} for k in sorted(tags)],
    }
    if settings.configurations:
        request["Configurations"] = settings.configurations
    if settings.security_configuration:
        request["SecurityConfiguration"] = settings.security_configuration
    return request


def step_request(batch_id: str, args: List[str]) -> Dict:
    size = sum(len(a) for a in args)
    if size >= STEP_ARGS_LIMIT:
        raise PipelineError(f"the EMR step of batch {batch_id} would have {size} characters of arguments, over "
                            f"EMR's {STEP_ARGS_LIMIT}: shorten [emr] spark_submit_args or the staging location")
    return {"Name": step_name(batch_id), "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}




def failure_detail(step_id: str, status: Dict, log_location: str) -> str:
    """One line from a finished step's status: FailureDetails and where its logs are."""
    details = status.get("FailureDetails") or {}
    why = ": ".join(p for p in (details.get("Reason"), details.get("Message")) if p)
    why = why or (status.get("StateChangeReason") or {}).get("Message") or "no failure details"
    logs = details.get("LogFile") or log_location
    return one_line(f"step {step_id} {status.get('State')}: {why} (logs: {logs})")
