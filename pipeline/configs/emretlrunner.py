"""Settings from a Snowplow EmrEtlRunner `config.yml`, which users of the batch pipeline already have.

The file is read as EmrEtlRunner reads it: ERB's `<%= ENV['NAME'] %>` tags first, then YAML whose keys are symbols
and strings alike (`:aws:` and `aws:` are one key to Ruby once EmrEtlRunner has symbolized them), at every level.
Only what the back-fill needs is taken, from the layout every release since R70 writes (`s3` and `emr` under `aws`):
the enriched archive, the region, the log bucket and the EMR cluster settings. A setting that is absent, empty or
still the sample's `ADD HERE` is simply not taken; the file's own AWS keys are never read into the result, and no
error message quotes a line of the file. Every error about a value taken from the file names the value and the
setting it came from.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Set, Tuple

import yaml

from pipeline.rules.errors import PipelineError
from spark.storage import LocationError, parse_location

from .emr_settings import EmrSettings

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
ARCHIVE_SETTING = "aws.s3.buckets.enriched.archive"
_WARNED: Set[Tuple[str, str]] = set()

# Our name for each value taken, and the file's settings it is read from (the first one set wins).
SETTINGS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("archive", (ARCHIVE_SETTING,)),
    ("region", ("aws.emr.region", "aws.s3.region")),
    ("log_uri", ("aws.s3.buckets.log",)),
    ("release_label", ("aws.emr.ami_version",)),
    ("master_instance_type", ("aws.emr.jobflow.master_instance_type",)),
    ("core_instance_type", ("aws.emr.jobflow.core_instance_type",)),
    ("core_instance_count", ("aws.emr.jobflow.core_instance_count",)),
    ("core_bid_price", ("aws.emr.jobflow.core_instance_bid",)),
    ("service_role", ("aws.emr.service_role",)),
    ("job_flow_role", ("aws.emr.jobflow_role",)),
    ("subnet_id", ("aws.emr.ec2_subnet_id",)),
    ("availability_zone", ("aws.emr.placement",)),
    ("key_name", ("aws.emr.ec2_key_name",)),
    ("security_configuration", ("aws.emr.security_configuration",)),
    ("bootstrap_actions", ("aws.emr.bootstrap",)),
    ("configurations", ("aws.emr.configuration",)),
    ("tags", ("monitoring.tags",)),
)


@dataclass(frozen=True)
class Setting:
    """One value the file gives (value not None), or why it gives none (`missing`)."""

    setting: str  # the file's dotted setting, e.g. aws.s3.buckets.enriched.archive
    value: Any = None
    missing: str = ""  # "absent", "empty", "still the sample's 'ADD HERE'", "environment variable X unset", ...
    unset_env: str = ""  # the variable when an ERB tag's variable is not set: an error wherever the value is used


@dataclass(frozen=True)
class EmrEtlRunnerConfig:
    """What one config.yml gives: every name of SETTINGS, with its value or why it has none."""

    path: str
    settings: Dict[str, Setting]
    pre_r70: bool  # the layout of releases before R70: s3 and emr at the top level, no enriched archive

    def values(self) -> Dict[str, Any]:
        """The values the file gives, by EmrSettings name (plus `archive`); `core_market` SPOT with a bid."""
        out = {name: s.value for name, s in self.settings.items() if s.value is not None}
        if "core_bid_price" in out:
            out["core_market"] = "SPOT"
        return out

    def origin(self, name: str) -> str:
        """Where a value came from, for messages: `<setting> in <file>`."""
        return f"{self.settings[name].setting} in {self.path}"

    def check_used(self, name: str) -> None:
        """A value about to be used that the file means to set from an unset environment variable is an error."""
        s = self.settings[name]
        if s.unset_env:
            raise PipelineError(f"EmrEtlRunner config {self.path}: {s.setting} uses <%= ENV['{s.unset_env}'] %> "
                                f"but environment variable {s.unset_env} is not set")

    def archive(self) -> str:
        """The enriched archive the file names; a PipelineError saying which setting lacks and what to do if none."""
        s = self.settings["archive"]
        if s.value is not None:
            return str(s.value)
        instead = "give --enriched-archive (s3://bucket/prefix of the enriched archive) instead"
        if s.unset_env:
            why = f"{s.setting} uses <%= ENV['{s.unset_env}'] %> but environment variable {s.unset_env} is not set"
        elif self.pre_r70:
            why = (f"no enriched archive: the file has the layout of EmrEtlRunner before R70 (s3 at the top level), "
                   f"which has no {s.setting}")
        else:
            why = f"no enriched archive: {s.setting} is {s.missing}"
        raise PipelineError(f"EmrEtlRunner config {self.path}: {why}; set it, or {instead}")


def _substitute_erb(text: str, path: str) -> str:
    """Replace `<%= ENV['X'] %>` by the variable; an unset one leaves a marker that fails only where it is used."""

    def replace(match: re.Match) -> str:
        line = text.count("\n", 0, match.start()) + 1
        env = _ERB_ENV.match(match.group(2).strip()) if match.group(1) else None
        if not env:
            raise PipelineError(f"EmrEtlRunner config {path}: line {line}: unsupported ERB tag "
                                "(only <%= ENV['NAME'] %> is understood)")
        name = env.group(2) or env.group(4)
        value = os.environ.get(name, env.group(6))
        return value if value is not None else f"{_MISSING}{name}__"

    return _ERB_TAG.sub(replace, text)


def _symbolized(node: Any) -> Any:
    """Keys as Ruby sees them once symbolized: `:aws` and `aws` are one key (the later one wins, as in a Hash)."""
    if isinstance(node, dict):
        return {(k[1:] if isinstance(k, str) and k.startswith(":") else k): _symbolized(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_symbolized(v) for v in node]
    return node


def _lookup(tree: Dict, dotted: str, path: str) -> Setting:
    node: Any = tree
    walked = []
    for part in dotted.split("."):
        if node is None:
            return Setting(dotted, missing="absent")
        if not isinstance(node, dict):
            raise PipelineError(f"EmrEtlRunner config {path}: {'.'.join(walked)} must be a mapping, "
                                f"not {type(node).__name__}")
        if part not in node:
            return Setting(dotted, missing="absent")
        node = node[part]
        walked.append(part)
    if node is None:
        return Setting(dotted, missing="empty")
    if isinstance(node, str) and _MISSING in node:
        name = node.split(_MISSING, 1)[1].split("__", 1)[0]
        return Setting(dotted, missing=f"environment variable {name} unset", unset_env=name)
    if isinstance(node, str) and node.strip() == _PLACEHOLDER:
        return Setting(dotted, missing=f"still the sample's {_PLACEHOLDER!r}")
    if node in ("", [], {}) or (isinstance(node, str) and not node.strip()):
        return Setting(dotted, missing="empty")
    return Setting(dotted, node)


def _release_label(s: Setting, path: str) -> Setting:
    match = _EMR7.match(str(s.value).strip())
    if match:
        return Setting(s.setting, f"emr-{match.group(1)}")
    if (path, str(s.value)) not in _WARNED:  # the file is read by every task of a backfill: say it once
        _WARNED.add((path, str(s.value)))
        log.warning("%s: ignoring %s %s: the job needs an EMR 7 release", path, s.setting, s.value)
    return Setting(s.setting, missing="not an EMR 7 release")


def _read_tree(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise PipelineError(f"EmrEtlRunner config {path}: cannot read it ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PipelineError(f"EmrEtlRunner config {path}: not UTF-8 text") from None
    text = _substitute_erb(text, path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "cannot be parsed"
        raise PipelineError(f"EmrEtlRunner config {path}: not valid YAML{where}: {problem}") from None


def read_emretlrunner_config(path: str) -> EmrEtlRunnerConfig:
    """Every value of SETTINGS the file gives, and why the others are missing."""
    tree = _symbolized(_read_tree(path))
    if not isinstance(tree, dict) or not isinstance(tree.get("aws"), dict):
        raise PipelineError(f"EmrEtlRunner config {path}: not an EmrEtlRunner config (no 'aws' section)")
    settings = {}
    for name, candidates in SETTINGS:
        found = [_lookup(tree, dotted, path) for dotted in candidates]
        s = next((f for f in found if f.value is not None or f.unset_env), found[0])
        if s.value is not None and name == "release_label":
            s = _release_label(s, path)
        elif s.value is not None and name == "core_bid_price":
            s = Setting(s.setting, str(s.value))
        settings[name] = s
    pre_r70 = not isinstance(tree["aws"].get("s3"), dict) and isinstance(tree.get("s3"), dict)
    return EmrEtlRunnerConfig(path, settings, pre_r70)


def backfill_archive(explicit: str, config_yml: str, runner: str) -> Tuple[str, str]:
    """The archive to back-fill and where it came from ("" for --enriched-archive, which wins over the file)."""
    config = read_emretlrunner_config(config_yml) if config_yml else None
    if explicit or config is None:
        return explicit, ""
    archive = config.archive()
    origin = config.origin("archive")
    try:
        location = parse_location(archive)
    except LocationError as e:
        raise PipelineError(f"enriched archive {archive!r} from {origin}: {e}") from None
    if runner == "emr" and not location.is_s3:
        raise PipelineError(f"enriched archive {archive!r} from {origin} is not in S3: --runner emr needs an "
                            "s3:// archive (fix the file, or give --enriched-archive)")
    return archive, origin


def merge_settings(explicit: Dict[str, Any], from_yml: Dict[str, Any]) -> Dict[str, Any]:
    """config.yml values overridden by every explicit (non-empty) parameter or luigi.cfg value."""
    merged = dict(from_yml)
    if explicit.get("core_market") and not explicit.get("core_bid_price"):
        merged.pop("core_bid_price", None)  # an explicit market choice beats the yml's spot bid
    merged.update({k: v for k, v in explicit.items() if v is not None and v != ""})
    return merged


def cluster_settings(emr_section: Mapping[str, Any], config_yml: str, explicit: Mapping[str, Any]) -> Dict[str, Any]:
    """The EMR cluster's settings, as the real run creates it and the dry run estimates it: luigi.cfg's [emr], then
    what the config.yml gives, then the explicit parameters, which win. Checked here, before any AWS call; a bad
    value from the file is named with its setting."""
    config = read_emretlrunner_config(config_yml) if config_yml else None
    from_yml = {k: v for k, v in config.values().items() if k != "archive"} if config else {}
    merged = merge_settings(dict(explicit), {**emr_section, **from_yml})
    if config is not None:
        for name in config.settings:
            if name != "archive" and not _given(explicit.get(name)):
                config.check_used(name)
        for name, value in from_yml.items():
            if name in config.settings and name in merged and not _given(explicit.get(name)):
                _check_value(config, name, value)
    EmrSettings.from_mapping(merged)
    return merged


def _given(value: Optional[Any]) -> bool:
    return value is not None and value != ""


def _check_value(config: EmrEtlRunnerConfig, name: str, value: Any) -> None:
    try:
        EmrSettings.from_mapping({name: value})
    except PipelineError as e:
        problem = str(e).removeprefix(f"[emr] {name}: ")
        raise PipelineError(f"EmrEtlRunner config {config.path}: {config.settings[name].setting} {value!r} "
                            f"cannot be used: {problem}") from None
