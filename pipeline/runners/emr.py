"""The EMR runner: one cluster per backfill, one Spark step per batch, found again by name when a run resumes.

Nothing secret ever reaches EMR: the step's only arguments are S3 locations of the job code and of the batch
spec, and the storage credentials (when the config has keys) are a KMS-encrypted S3 object the spec points to.
Idle auto-termination is always set, so a crashed pipeline cannot leave a cluster billing forever.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Tuple

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ProfileNotFound

from pipeline.configs.emr_settings import EmrSettings, bad_setting
from pipeline.rules.errors import PipelineError, aws_error
from spark.errors import is_not_found, one_line
from spark.refusals import profile_identity, watch
from spark.runid import file_name
from spark.spec import BatchSpec
from spark.storage import Location, LocationError, delete, parse_location, read_bytes, s3_client, write_bytes

from . import jobcode
from .emr_requests import (
    BACKFILL_TAG,
    cluster_name,
    cluster_request,
    console_url,
    failure_detail,
    step_request,
)
from .outcome import BatchOutcome, Progress

log = logging.getLogger("manifest.emr")

ALIVE_CLUSTER_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
ACTIVE_STEP_STATES = ("PENDING", "RUNNING", "CANCEL_PENDING")
FAILED_STEP_STATES = ("FAILED", "CANCELLED", "INTERRUPTED")
_INSTALL_SCRIPT = b"""#!/bin/bash
# Installs the Python packages the manifest populator's job needs and EMR lacks, on every node.
set -euo pipefail
sudo python3 -m pip install --quiet "$@"
"""


def session_for(settings: EmrSettings) -> boto3.session.Session:
    """A boto3 session for the configured profile and region (the original populator's --profile)."""
    try:
        return boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    except ProfileNotFound:
        raise bad_setting("profile", f"AWS profile {settings.profile!r} is not configured") from None


def _elapsed(since: Optional[datetime]) -> str:
    if since is None:
        return "0s"
    seconds = max(0, int((datetime.now(timezone.utc) - since).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


class EmrRunner:
    """Runs a backfill's batches as steps on one EMR cluster; every AWS call goes through the injected session."""

    def __init__(self, settings: EmrSettings, backfill_id: str, staging: Location, session,
                 poll_seconds: Optional[Tuple[float, float]] = None, sleep: Callable[[float], None] = time.sleep):
        if not staging.is_s3:
            raise PipelineError(f"the EMR runner stages its files in S3; {staging.uri} is not an s3:// location")
        if not backfill_id or len(backfill_id) > 200:
            raise PipelineError("the EMR runner needs a backfill id of 1 to 200 characters")
        self.settings, self.backfill_id, self.staging = settings, backfill_id, staging
        self.region = settings.region or session.region_name
        if not self.region:
            raise bad_setting("region", "no AWS region: set [emr] region or AWS_DEFAULT_REGION")
        retries = Config(retries={"max_attempts": 10, "mode": "standard"})
        identity = profile_identity(settings.profile or "")
        self.emr = watch(session.client("emr", region_name=self.region, config=retries), identity, fail_fast=True)
        self.s3 = s3_client(session, identity, fail_fast=True)
        self.poll_seconds = poll_seconds or (min(5.0, settings.poll_seconds), settings.poll_seconds)
        self.sleep = sleep
        self.cluster_id: Optional[str] = None
        self.created_cluster = False  # by this runner: a dry run's count terminates only a cluster it created
        self._job_code: Optional[Tuple[str, str]] = None

    @property
    def log_uri(self) -> str:
        return self.settings.log_uri or self.staging.child("emr-logs").uri + "/"

    @property
    def job_code_location(self) -> Location:
        if self.settings.job_code_uri:
            return parse_location(self.settings.job_code_uri)
        return self.staging.child("job-code")

    @property
    def credentials_location(self) -> Location:
        return self.staging.child("credentials", f"{self.backfill_id}.json")

    # -- S3 staging ---------------------------------------------------------------------------------------------

    def _exists(self, loc: Location) -> bool:
        try:
            self.s3.head_object(Bucket=loc.bucket, Key=loc.key)
            return True
        except ClientError as e:
            if is_not_found(e):
                return False
            raise

    def _upload_once(self, loc: Location, data: Callable[[], bytes]) -> None:
        if not self._exists(loc):
            write_bytes(loc, data(), self.s3)
            log.info("uploaded %s", loc.uri)

    def stage_job_code(self) -> Tuple[str, str]:
        """Upload the zip and entry script under their content hash, unless they are there already."""
        if self._job_code:
            return self._job_code
        entry = jobcode.entry_script()
        try:
            with open(entry, "rb") as f:
                entry_bytes = f.read()
        except OSError as e:
            raise PipelineError(f"the job's entry script {entry} cannot be read ({e.strerror}): reinstall") from None
        digest = jobcode.code_hash()
        prefix = self.job_code_location.child(digest[:12])
        zip_loc, entry_loc = prefix.child(jobcode.zip_name(digest)), prefix.child(jobcode.ENTRY_NAME)

        def zip_bytes() -> bytes:
            with tempfile.TemporaryDirectory(prefix="manifest-jobcode-") as tmp:
                with open(jobcode.build_job_zip(tmp), "rb") as f:
                    return f.read()

        self._upload_once(zip_loc, zip_bytes)
        self._upload_once(entry_loc, lambda: entry_bytes)
        self._job_code = (zip_loc.uri, entry_loc.uri)
        return self._job_code

    def _package_bootstrap(self) -> List[Dict]:
        if not self.settings.python_packages:
            return []
        loc = self.job_code_location.child("bootstrap", "install-python-packages.sh")
        self._upload_once(loc, lambda: _INSTALL_SCRIPT)
        return [{"Name": "install python packages",
                 "ScriptBootstrapAction": {"Path": loc.uri, "Args": list(self.settings.python_packages)}}]

    def stage_credentials(self, credentials: Optional[dict]) -> Optional[str]:
        """Stage the storage keys as a KMS-encrypted object for the job; None means the instance role is used."""
        if not credentials:
            return None
        loc = self.credentials_location
        write_bytes(loc, json.dumps(credentials).encode("utf-8"), self.s3, encrypt=True)
        return loc.uri

    def cleanup_credentials(self) -> None:
        delete(self.credentials_location, self.s3)

    # -- cluster ------------------------------------------------------------------------------------------------

    def _state(self, cluster_id: str) -> Dict:
        try:
            return self.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        except ClientError as e:
            raise aws_error(e, f"EMR cluster {cluster_id} cannot be described in {self.region}") from None

    def find_backfill_cluster(self) -> Optional[str]:
        """The alive cluster created for this backfill (same name and backfill tag), if any."""
        name = cluster_name(self.backfill_id)
        for page in self.emr.get_paginator("list_clusters").paginate(ClusterStates=list(ALIVE_CLUSTER_STATES)):
            for summary in page.get("Clusters", []):
                if summary.get("Name") != name:
                    continue
                tags = {t["Key"]: t["Value"] for t in self._state(summary["Id"]).get("Tags", [])}
                if tags.get(BACKFILL_TAG) == self.backfill_id:
                    return summary["Id"]
        return None

    def ensure_cluster(self) -> str:
        """The configured cluster, this backfill's alive cluster, or a new one (also when ours died meanwhile)."""
        if self.cluster_id and self._state(self.cluster_id)["Status"]["State"] in ALIVE_CLUSTER_STATES:
            return self.cluster_id
        self.cluster_id = None
        configured = self.settings.cluster_id
        if configured:
            state = self._state(configured)["Status"]["State"]
            if state not in ALIVE_CLUSTER_STATES:
                raise bad_setting("cluster_id", f"cluster {configured} is {state}; name a running cluster or "
                                                "leave it empty to create one")
            self.cluster_id = configured
            return configured
        found = self.find_backfill_cluster()
        if found:
            log.info("using EMR cluster %s of backfill %s", found, self.backfill_id)
            self.cluster_id = found
            return found
        request = cluster_request(self.settings, cluster_name(self.backfill_id), self.backfill_id, self.log_uri,
                                  self._package_bootstrap())
        self.cluster_id = self.emr.run_job_flow(**request)["JobFlowId"]
        self.created_cluster = True
        log.info("created EMR cluster %s (%s, idle timeout %d s)", self.cluster_id, self.settings.release_label,
                 self.settings.idle_timeout_seconds)
        return self.cluster_id

    def terminate_created_cluster(self) -> None:
        """After a dry run's count: a cluster it created ends with it; one it found (a live backfill's) is left."""
        if self.created_cluster and self.cluster_id:
            self.emr.terminate_job_flows(JobFlowIds=[self.cluster_id])
            log.info("terminated EMR cluster %s", self.cluster_id)

    def finish(self, success: bool) -> None:
        """When the backfill ends, however: delete the staged credentials (a resumed run stages them again; a step
        already running read them as it started). After a success, terminate the cluster too; after a failure it
        stays for a resumed run to adopt, and idle auto-termination ends it if nobody comes back.
        """
        self.cleanup_credentials()
        if not success:
            return
        if self.settings.cluster_id:
            return
        cluster_id = self.cluster_id or self.find_backfill_cluster()
        if cluster_id:
            self.emr.terminate_job_flows(JobFlowIds=[cluster_id])
            log.info("terminated EMR cluster %s", cluster_id)

    # -- steps --------------------------------------------------------------------------------------------------

    def _latest_step(self, cluster_id: str, request: Dict) -> Optional[Dict]:
        """The newest step with the batch's name and spec (a shared cluster may hold another backfill's batch)."""
        name, spec_args = request["Name"], request["HadoopJarStep"]["Args"][-2:]
        found = []
        for page in self.emr.get_paginator("list_steps").paginate(ClusterId=cluster_id):
            found.extend(s for s in page.get("Steps", [])
                         if s.get("Name") == name and (s.get("Config") or {}).get("Args", [])[-2:] == spec_args)
        if not found:
            return None
        oldest = datetime.min.replace(tzinfo=timezone.utc)
        return max(found, key=lambda s: s["Status"].get("Timeline", {}).get("CreationDateTime") or oldest)

    def _read_spec(self, loc: Location) -> BatchSpec:
        try:
            return BatchSpec.from_json(read_bytes(loc, self.s3).decode("utf-8"))
        except ClientError as e:
            raise aws_error(e, f"cannot read the batch spec {loc.uri}") from None

    def _runs_reported(self, spec: BatchSpec, since: Optional[datetime]) -> int:
        """Reports of the batch's runs written since the step was created (older ones are a previous attempt's)."""
        reports = parse_location(spec.reports)
        wanted = {file_name(run) for run in spec.runs}
        prefix = reports.key.rstrip("/") + "/" if reports.key else ""
        since = since.replace(microsecond=0) if since else None  # LastModified has whole seconds
        count = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=reports.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"][len(prefix):] in wanted and (since is None or obj["LastModified"] >= since):
                    count += 1
        return count

    def run_batch(self, batch_id: str, spec_uri: str, progress: Progress, tracking: Callable[[str], None],
                  resubmit_completed: bool = False) -> BatchOutcome:
        """Run (or adopt) the batch's step and wait for it to end.

        A PENDING or RUNNING step of the batch's name is adopted; a COMPLETED one is reported done without a new
        step unless `resubmit_completed` (for a caller whose report check found runs the step did not finish).
        """
        try:
            spec_loc = parse_location(spec_uri)
        except LocationError as e:
            raise PipelineError(str(e)) from None
        if not spec_loc.is_s3:
            raise PipelineError(f"the batch spec must be in S3 for the EMR runner, not {spec_uri}")
        cluster_id = self.ensure_cluster()
        zip_uri, entry_uri = self.stage_job_code()
        request = step_request(batch_id, jobcode.emr_step_args(zip_uri, entry_uri, spec_loc.uri,
                                                               self.settings.spark_submit_args))
        spec = self._read_spec(spec_loc)
        existing = self._latest_step(cluster_id, request)
        state = existing["Status"]["State"] if existing else None
        if state == "COMPLETED" and not resubmit_completed:
            progress(f"EMR cluster {cluster_id} step {existing['Id']} COMPLETED earlier", 100.0)
            return BatchOutcome(ok=True, detail=f"step {existing['Id']} COMPLETED earlier", job_id=existing["Id"])
        if state in ACTIVE_STEP_STATES:
            step_id = existing["Id"]
            log.info("adopting step %s (%s) of batch %s on %s", step_id, state, batch_id, cluster_id)
        else:
            step_id = self.emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[request])["StepIds"][0]
            log.info("submitted step %s for batch %s on %s", step_id, batch_id, cluster_id)
        tracking(console_url(self.region, cluster_id))
        return self._wait(cluster_id, step_id, spec, progress)

    def _wait(self, cluster_id: str, step_id: str, spec: BatchSpec, progress: Progress) -> BatchOutcome:
        delay, longest = self.poll_seconds
        while True:
            status = self.emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]
            state, timeline = status["State"], status.get("Timeline") or {}
            reported = self._runs_reported(spec, timeline.get("CreationDateTime"))
            total = len(spec.runs)
            pct = 100.0 if state == "COMPLETED" else round(100.0 * reported / max(1, total), 1)
            progress(f"EMR cluster {cluster_id} step {step_id} {state}, "
                     f"{_elapsed(timeline.get('StartDateTime') or timeline.get('CreationDateTime'))} elapsed, "
                     f"{reported}/{total} runs reported", pct)
            if state == "COMPLETED":
                return BatchOutcome(ok=True, detail=f"step {step_id} COMPLETED", job_id=step_id)
            if state in FAILED_STEP_STATES:
                detail = failure_detail(step_id, status, f"{self.log_uri.rstrip('/')}/{cluster_id}/steps/{step_id}/")
                cluster = self._state(cluster_id)["Status"]
                if cluster["State"].startswith("TERMINAT"):
                    reason = (cluster.get("StateChangeReason") or {}).get("Message") or "no reason given"
                    detail += one_line(f"; cluster {cluster_id} {cluster['State']}: {reason}")
                return BatchOutcome(ok=False, detail=detail, job_id=step_id)
            self.sleep(delay)
            delay = min(delay * 2, longest)
