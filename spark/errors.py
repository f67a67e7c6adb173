"""Error text for users and the one test of "not found", for the job and the pipeline alike.

Every error line a user sees (logs, reports, markers, luigid) goes through `one_line`: whitespace collapsed, and
anything shaped like an AWS access key id replaced, whatever raised it. Botocore's errors are told apart by their
`response` (no botocore import here: the pure modules of the job use this too).
"""
from __future__ import annotations

import re

MAX_LINE = 500  # characters of one error line kept in a report or a log line
REDACTED = "<redacted>"
_KEY_LIKE = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_PY_ERROR = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
# An absent S3 object: GetObject says NoSuchKey, HeadObject (no body to say it) only its status.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


def one_line(text: object) -> str:
    """`text` on one line, access key ids redacted."""
    return _KEY_LIKE.sub(REDACTED, " ".join(str(text).split()))


def error_line(e: BaseException) -> str:
    """'Type: message' of an exception on one line, redacted, at most MAX_LINE characters."""
    return one_line(f"{type(e).__name__}: {e}")[:MAX_LINE]


def spark_error_line(e: BaseException) -> str:
    """The Python error inside a Spark failure (its last 'XxxError: message' line), else its first line."""
    text = str(e)
    found = [m.group(0) for m in map(_PY_ERROR.match, text.splitlines()) if m]
    line = found[-1] if found else (text.strip().splitlines() or [type(e).__name__])[0]
    return one_line(line)[:MAX_LINE]


def error_code(e: BaseException) -> str:
    """The error code of an AWS error (botocore's ClientError), '' for any other exception."""
    response = getattr(e, "response", None)
    return (response.get("Error") or {}).get("Code", "") if isinstance(response, dict) else ""


def is_not_found(e: BaseException) -> bool:
    """Whether `e` says that the object read is absent: a missing local file, or S3's 404 for a key."""
    return isinstance(e, FileNotFoundError) or error_code(e) in NOT_FOUND_CODES
