"""Settings from a Snowplow EmrEtlRunner `config.yml`, which users of the batch pipeline already have.

Only what the back-fill needs is taken: the enriched archive, the region, the log bucket and the EMR cluster
settings. The file's own AWS keys are never read into the result, and no error message quotes a line of the file.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, Optional

import yaml

from .errors import PipelineError

log = logging.getLogger("manifest.emretlrunner")

_ERB_TAG = re.compile(r"<%(=?)(.*?)%>", re.DOTALL)
# ENV['NAME'], ENV["NAME"] or ENV.fetch('NAME'[, 'default']), with ERB's optional '-' trim marks
_ERB_ENV = re.compile(
    r"""^-?\s*ENV(?:\[\s*(['"])(\w+)\1\s*\]|\.fetch\(\s*(['"])(\w+)\3\s*(?:,\s*(['"])(.*?)\5\s*)?\))\s*-?$""",
    re.DOTALL,
)
_MISSING = "__ERB_MISSING_ENV__"
_PLACEHOLDER = "ADD HERE"  # what EmrEtlRunner's sample config leaves in the fields to fill
_EMR7 = re.compile(r"^(?:emr-)?(7\.\d+\.\d+)$")


def _substitute_erb(text: str, path: str) -> str:
    """Replace `<%= ENV['X'] %>` by the variable; an unset one leaves a marker that fails only where it is used."""

    def replace(match: re.Match) -> str:
        line = text.count("\n", 0, match.start()) + 1
        env = _ERB_ENV.match(match.group(2).strip()) if match.group(1) else None
        if not env:
            raise PipelineError(f"{path}: line {line}: unsupported ERB tag (only <%= ENV['NAME'] %> is understood)")
        name = env.group(2) or env.group(4)
        value = os.environ.get(name, env.group(6))
        return value if value is not None else f"{_MISSING}{name}__"

    return _ERB_TAG.sub(replace, text)


def _check_env(value: Any, path: str, key: str) -> Any:
    text = str(value)
    if _MISSING in text:
        name = text.split(_MISSING, 1)[1].split("__", 1)[0]
        raise PipelineError(f"{path}: {key} uses <%= ENV['{name}'] %> but environment variable {name} is not set")
    return value


def _get(tree: Dict, dotted: str, path: str) -> Any:
    """The value at a dotted path; None when absent, empty or still the sample's placeholder."""
    node: Any = tree
    walked = []
    for part in dotted.split("."):
        if node is None:
            return None
        if not isinstance(node, dict):
            raise PipelineError(f"{path}: {'.'.join(walked)} must be a mapping, not {type(node).__name__}")
        node = node.get(part)
        walked.append(part)
    if node is None or (isinstance(node, str) and node.strip() in ("", _PLACEHOLDER)):
        return None
    return _check_env(node, path, dotted)


def _release_label(ami_version: Any, path: str) -> Optional[str]:
    match = _EMR7.match(str(ami_version).strip())
    if match:
        return f"emr-{match.group(1)}"
    log.warning("%s: ignoring aws.emr.ami_version %s: the job needs an EMR 7 release", path, ami_version)
    return None


def read_emretlrunner_config(path: str) -> Dict:
    """The back-fill's settings found in an EmrEtlRunner config.yml; keys whose value is absent are left out.

    Keys: `archive`, plus EmrSettings names (`region`, `log_uri`, `release_label`, instance settings, roles,
    `subnet_id`, `availability_zone`, `key_name`, `security_configuration`, `bootstrap_actions`,
    `configurations`, `tags`).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise PipelineError(f"EmrEtlRunner config {path}: cannot read it ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"EmrEtlRunner config {path}: not UTF-8 text") from None
    text = _substitute_erb(text, path)
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "cannot be parsed"
        raise PipelineError(f"EmrEtlRunner config {path}: not valid YAML{where}: {problem}") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("aws"), dict):
        raise PipelineError(f"EmrEtlRunner config {path}: not an EmrEtlRunner config (no 'aws' section)")

    def get(dotted: str) -> Any:
        return _get(tree, dotted, path)

    out: Dict[str, Any] = {
        "archive": get("aws.s3.buckets.enriched.archive"),
        "region": get("aws.emr.region") or get("aws.s3.region"),
        "log_uri": get("aws.s3.buckets.log"),
        "master_instance_type": get("aws.emr.jobflow.master_instance_type"),
        "core_instance_type": get("aws.emr.jobflow.core_instance_type"),
        "core_instance_count": get("aws.emr.jobflow.core_instance_count"),
        "core_bid_price": get("aws.emr.jobflow.core_instance_bid"),
        "service_role": get("aws.emr.service_role"),
        "job_flow_role": get("aws.emr.jobflow_role"),
        "subnet_id": get("aws.emr.ec2_subnet_id"),
        "availability_zone": get("aws.emr.placement"),
        "key_name": get("aws.emr.ec2_key_name"),
        "security_configuration": get("aws.emr.security_configuration"),
        "bootstrap_actions": get("aws.emr.bootstrap") or None,
        "configurations": get("aws.emr.configuration") or None,
        "tags": get("monitoring.tags") or None,
    }
    ami = get("aws.emr.ami_version")
    if ami is not None:
        out["release_label"] = _release_label(ami, path)
    if out["core_bid_price"] is not None:
        out["core_bid_price"] = str(out["core_bid_price"])
        out["core_market"] = "SPOT"
    return {k: v for k, v in out.items() if v is not None}


def merge_settings(explicit: Dict[str, Any], from_yml: Dict[str, Any]) -> Dict[str, Any]:
    """config.yml values overridden by every explicit (non-empty) parameter or luigi.cfg value."""
    merged = dict(from_yml)
    if explicit.get("core_market") and not explicit.get("core_bid_price"):
        merged.pop("core_bid_price", None)  # an explicit market choice beats the yml's spot bid
    merged.update({k: v for k, v in explicit.items() if v is not None and v != ""})
    return merged
