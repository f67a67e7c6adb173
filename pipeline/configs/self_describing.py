"""Self-describing JSON as Iglu defines it: schema keys (iglu: URIs), the {schema, data} envelope, and the one-line
text of what is wrong with one, secrets masked.

Every message built here may be shown to the user: values under SECRET_KEYS never appear in it, whatever the problem.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from jsonschema.exceptions import ValidationError

from pipeline.rules.errors import PipelineError

log = logging.getLogger("manifest.iglu")

# Values under these keys (at any depth) are never shown in a message, whatever the problem with them.
SECRET_KEYS = frozenset({"accessKeyId", "secretAccessKey", "auth", "apikey"})
MASK = "****"

_URI = re.compile(
    r"^iglu:([a-zA-Z0-9_.-]+)/([a-zA-Z0-9_-]+)/([a-zA-Z0-9_-]+)/([1-9][0-9]*-(?:0|[1-9][0-9]*)-(?:0|[1-9][0-9]*))$"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class IgluError(PipelineError):
    """A schema cannot be resolved, or a JSON does not validate against it; str() is one line."""


@dataclass(frozen=True)
class SchemaKey:
    vendor: str
    name: str
    format: str
    version: str  # SchemaVer MODEL-REVISION-ADDITION, kept as written

    @classmethod
    def parse(cls, uri: str) -> SchemaKey:
        """Raises ValueError unless uri is iglu:vendor/name/format/M-R-A (SchemaVer, no leading zeros)."""
        match = _URI.match(uri) if isinstance(uri, str) else None
        if match is None or set(match.group(1)) == {"."}:
            raise ValueError(f"{uri!r} is not an Iglu URI (iglu:vendor/name/format/MODEL-REVISION-ADDITION)")
        return cls(*match.groups())

    @property
    def path(self) -> str:
        return f"{self.vendor}/{self.name}/{self.format}/{self.version}"

    @property
    def uri(self) -> str:
        return f"iglu:{self.path}"

    def __str__(self) -> str:
        return self.uri



def parse_envelope(instance: Any, file_label: str, *, extra_keys: str = "refuse") -> Tuple[SchemaKey, Any]:
    """The (schema key, data) of a self-describing JSON; IgluError naming every envelope problem.

    Keys beside 'schema' and 'data' are a problem with extra_keys="refuse"; with "warn" they are logged and ignored
    (unless something else is wrong too), as Iglu's own decoder in Snowplow's loaders ignores them.
    """
    if not isinstance(instance, dict):
        raise IgluError(
            f"{file_label}: not a self-describing JSON: the top level is {kind_of(instance)}, "
            "expected an object with 'schema' and 'data'"
        )
    problems = []
    key = None
    if "schema" not in instance:
        problems.append("no 'schema' (the iglu: URI of the data's schema)")
    else:
        try:
            key = SchemaKey.parse(instance["schema"])
        except ValueError:
            shown = show(instance["schema"])
            problems.append(f"schema: {shown} is not an Iglu URI (iglu:vendor/name/format/MODEL-REVISION-ADDITION)")
    if "data" not in instance:
        problems.append("no 'data'")
    extra = ", ".join(map(show, sorted(set(instance) - {"schema", "data"})))
    if extra and (problems or extra_keys != "warn"):
        problems.append(f"unexpected top-level key(s) {extra} (only 'schema' and 'data' belong)")
    if problems:
        text = "; ".join(f"{file_label}: not a self-describing JSON: {p}" for p in problems)
        raise IgluError(scrub(text, instance))
    if extra:
        log.warning("%s: ignoring top-level key(s) %s beside 'schema' and 'data', as Snowplow's loaders do",
                    file_label, scrub(extra, instance))
    return key, instance["data"]


def explain(error: ValidationError) -> List[Tuple[Sequence, str]]:
    """(instance path, message) pairs for one error, looking inside oneOf/anyOf for the branch that was meant."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [(error.absolute_path, _render(error))]
    depth = len(error.absolute_path)
    branches: Dict[Any, List[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)

    def rank(errors: List[ValidationError]) -> Tuple[bool, int]:
        shallow = [e for e in errors if len(e.absolute_path) == depth]
        return any(e.validator == "type" for e in shallow), len(shallow)

    ranked = sorted(branches.values(), key=rank)
    best = rank(ranked[0])
    if not best[0] and (len(ranked) == 1 or rank(ranked[1]) > best):
        return [pair for e in ranked[0] for pair in explain(e)]
    shown = show(error.instance, _secret_path(error.absolute_path))
    if all(rank(b)[0] for b in ranked):
        types = [t for b in ranked for e in b if e.validator == "type" for t in _as_list(e.validator_value)]
        return [(error.absolute_path, f"{shown} is not of type {' or '.join(map(repr, dict.fromkeys(types)))}")]
    alternatives = ", or ".join(_render(b[0]) for b in ranked)
    return [(error.absolute_path, f"{shown} matches none of the allowed forms: {alternatives}")]


def _render(error: ValidationError) -> str:
    """jsonschema's message with the offending value shown masked and shortened."""
    original = repr(error.instance)
    shown = show(error.instance, _secret_path(error.absolute_path))
    return error.message.replace(original, shown, 1)


def _secret_path(path: Sequence) -> bool:
    return any(isinstance(p, str) and p in SECRET_KEYS for p in path)


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if k in SECRET_KEYS else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def show(value: Any, secret: bool = False) -> str:
    """A value as a message may show it: masked when secret, secrets inside masked, long ones shortened."""
    if secret:
        return MASK
    text = repr(_masked(value))
    return text if len(text) <= 80 else text[:76] + "...."


def _secret_strings(value: Any, under_secret: bool = False) -> List[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _secret_strings(v, under_secret or k in SECRET_KEYS)]
    if isinstance(value, list):
        return [s for v in value for s in _secret_strings(v, under_secret)]
    return [value] if under_secret and isinstance(value, str) and len(value) >= 4 else []


def scrub(text: str, instance: Any) -> str:
    """Last line of defence: any secret string of instance still in text (as is, repr- or JSON-escaped) masked."""
    for secret in sorted(set(_secret_strings(instance)), key=len, reverse=True):
        for form in {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}:
            text = text.replace(form, MASK)
    return text


def _as_list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else [value]


def kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def json_path(path: Sequence, root: str = "data") -> str:
    parts = [root]
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif _IDENTIFIER.match(p):
            parts.append(f".{p}")
        else:
            parts.append(f"[{json.dumps(p)}]")
    return "".join(parts)
