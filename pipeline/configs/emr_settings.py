"""The `[emr]` settings: parsed from luigi.cfg's strings (or EmrEtlRunner's config), validated once, with defaults.

Pure: no AWS call. The estimate reads the same defaults as the cluster the runner will create.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from pipeline.rules.errors import PipelineError
from spark.storage import LocationError, parse_location

IDLE_TIMEOUT_RANGE = (60, 604800)  # what EMR accepts for AutoTerminationPolicy.IdleTimeout
_RELEASE = re.compile(r"^emr-7\.\d+\.\d+$")
_CLUSTER_ID = re.compile(r"^j-[A-Z0-9]{1,64}$")


def bad_setting(key: str, problem: str) -> PipelineError:
    """One line naming the [emr] setting at fault."""
    return PipelineError(f"[emr] {key}: {problem}")


def _s3_uri(key: str, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    try:
        loc = parse_location(value)
    except LocationError as e:
        raise bad_setting(key, str(e)) from None
    if not loc.is_s3:
        raise bad_setting(key, f"{value!r} must be an s3:// location")
    return loc.uri


def _bootstrap_action(item: Any) -> Dict:
    """EMR's BootstrapAction shape from an S3 path, {name, path, args} or the API shape itself."""
    if isinstance(item, str):
        item = {"path": item}
    if not isinstance(item, dict):
        raise bad_setting("bootstrap_actions", f"{item!r} is neither an s3:// path nor a {{name, path, args}} object")
    script = item.get("ScriptBootstrapAction") or {}
    path = item.get("path") or item.get("Path") or script.get("Path")
    args = item.get("args") or item.get("Args") or script.get("Args") or []
    if not isinstance(path, str) or not isinstance(args, list):
        raise bad_setting("bootstrap_actions", f"{item!r} needs a 'path' (s3://...) and optional 'args' (a list)")
    path = _s3_uri("bootstrap_actions", path)
    name = item.get("name") or item.get("Name") or path.rsplit("/", 1)[-1]
    return {"Name": str(name), "ScriptBootstrapAction": {"Path": path, "Args": [str(a) for a in args]}}


def _configurations(value: Any) -> List[Dict]:
    """EMR Configurations from the API list or EmrEtlRunner's {classification: {property: value}} mapping."""
    if isinstance(value, dict):
        value = [{"Classification": c, "Properties": props or {}} for c, props in value.items()]
    if not isinstance(value, list) or not all(isinstance(c, dict) and c.get("Classification") for c in value):
        raise bad_setting("configurations", "expected a list of {Classification, Properties} objects")
    out = []
    for c in value:
        props = c.get("Properties") or {}
        if not isinstance(props, dict):
            raise bad_setting("configurations", f"Properties of {c['Classification']!r} must be an object")
        item = dict(c, Properties={str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in props.items()})
        out.append(item)
    return out


@dataclass
class EmrSettings:
    """The `[emr]` section of luigi.cfg: the cluster to create, or the existing one to use."""

    release_label: str = "emr-7.5.0"
    master_instance_type: str = "m5.xlarge"
    master_instance_count: int = 1
    core_instance_type: str = "m5.xlarge"
    core_instance_count: int = 2
    core_market: str = "ON_DEMAND"
    core_bid_price: Optional[str] = None  # USD; only with core_market SPOT (none = capped at the on-demand price)
    service_role: str = "EMR_DefaultRole"
    job_flow_role: str = "EMR_EC2_DefaultRole"
    subnet_id: Optional[str] = None
    availability_zone: Optional[str] = None  # only without subnet_id (EC2-Classic style placement)
    key_name: Optional[str] = None
    security_configuration: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    bootstrap_actions: List[Dict] = field(default_factory=list)
    configurations: List[Dict] = field(default_factory=list)
    python_packages: List[str] = field(default_factory=list)  # pip-installed on every node by a bootstrap action
    idle_timeout_seconds: int = 3600
    step_concurrency: int = 1
    poll_seconds: float = 60.0  # longest wait between two looks at a running step (the first is within 5 s)
    cluster_id: Optional[str] = None  # an existing cluster to run on; it is never created nor terminated by us
    log_uri: Optional[str] = None  # default: <staging>/emr-logs/
    job_code_uri: Optional[str] = None  # default: <staging>/job-code/
    region: Optional[str] = None  # default: the session's region
    profile: Optional[str] = None
    spark_submit_args: List[str] = field(default_factory=list)

    def __post_init__(self):
        if not _RELEASE.match(self.release_label or ""):
            raise bad_setting("release_label", f"{self.release_label!r} is not an EMR 7 release label like "
                                               "emr-7.5.0 (the job needs the Spark 3.5 line)")
        lo, hi = IDLE_TIMEOUT_RANGE
        if not lo <= self.idle_timeout_seconds <= hi:
            raise bad_setting("idle_timeout_seconds", f"{self.idle_timeout_seconds} is outside {lo}..{hi} seconds")
        if self.master_instance_count not in (1, 3):
            raise bad_setting("master_instance_count", f"{self.master_instance_count} must be 1 or 3")
        if self.core_instance_count < 0:
            raise bad_setting("core_instance_count", f"{self.core_instance_count} must not be negative")
        if not 1 <= self.step_concurrency <= 256:
            raise bad_setting("step_concurrency", f"{self.step_concurrency} is outside 1..256")
        if not 0.5 <= self.poll_seconds <= 600:
            raise bad_setting("poll_seconds", f"{self.poll_seconds} is outside 0.5..600 seconds")
        self.core_market = (self.core_market or "ON_DEMAND").upper()
        if self.core_bid_price is not None:
            try:
                float(self.core_bid_price)
            except ValueError:
                raise bad_setting("core_bid_price", f"{self.core_bid_price!r} is not a price in USD") from None
            self.core_bid_price, self.core_market = str(self.core_bid_price), "SPOT"
        if self.core_market not in ("ON_DEMAND", "SPOT"):
            raise bad_setting("core_market", f"{self.core_market!r} must be ON_DEMAND or SPOT")
        if self.cluster_id is not None and not _CLUSTER_ID.match(self.cluster_id):
            raise bad_setting("cluster_id", f"{self.cluster_id!r} is not a cluster id like j-2AXXXXXXGAPLF")
        self.log_uri = _s3_uri("log_uri", self.log_uri)
        self.log_uri = self.log_uri + "/" if self.log_uri else None  # EMR writes <log_uri>/<cluster id>/...
        self.job_code_uri = _s3_uri("job_code_uri", self.job_code_uri)
        self.tags = {str(k): str(v) for k, v in self.tags.items()}
        self.bootstrap_actions = [_bootstrap_action(b) for b in self.bootstrap_actions]
        self.configurations = _configurations(self.configurations)
        self.python_packages = [str(p) for p in self.python_packages]
        self.spark_submit_args = [str(a) for a in self.spark_submit_args]

    @classmethod
    def from_mapping(cls, values: Dict[str, Any]) -> EmrSettings:
        """From luigi.cfg's string values (lists and objects as JSON) or already-parsed values; empty = default."""
        kinds = {f.name: f for f in dataclasses.fields(cls)}
        parsed: Dict[str, Any] = {}
        for key, value in values.items():
            if key not in kinds:
                raise bad_setting(key, f"unknown setting (known: {', '.join(sorted(kinds))})")
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            parsed[key] = _parse_value(key, kinds[key], value)
        return cls(**parsed)


def _parse_value(key: str, spec: dataclasses.Field, value: Any) -> Any:
    kind = str(spec.type)
    if kind == "int":
        if isinstance(value, bool):
            raise bad_setting(key, f"{value!r} is not a whole number")
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad_setting(key, f"{value!r} is not a whole number") from None
    if kind == "float":
        try:
            number = float(str(value).strip()) if not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or number != number:
            raise bad_setting(key, f"{value!r} is not a number")
        return number
    if kind.startswith(("List", "Dict")):
        want = list if kind.startswith("List") else dict
        if isinstance(value, str):
            text = value.strip()
            if want is list and key == "spark_submit_args" and not text.startswith("["):
                return shlex.split(text)
            try:
                value = json.loads(text)
            except ValueError as e:
                raise bad_setting(key, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if key == "configurations" and isinstance(value, dict):
            return value
        if not isinstance(value, want):
            expected = "list" if want is list else "object"
            raise bad_setting(key, f"expected a JSON {expected}, got {type(value).__name__}")
        return value
    return str(value).strip()
