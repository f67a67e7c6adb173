"""Luigi tasks that back-fill Snowplow's DynamoDB event manifest: `luigi --module pipeline PopulateManifest`."""
from __future__ import annotations

import logging
import re

from .errors import PipelineError

# A user's mistake is one clear line, not a traceback: luigi logs task failures with the exception attached and
# scheduling failures (errors in requires/complete) with the traceback pasted into the message.
_LAST_LINE = re.compile(r"^(?:pipeline|spark)\.[\w.]*(?:Error|Exception): (.*)$")


class _OneLineErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PipelineError):
            record.msg, record.args, record.exc_info, record.exc_text = f"ERROR: {exc}", (), None, None
            record.levelno, record.levelname = logging.ERROR, "ERROR"
            return True
        if isinstance(record.msg, str) and record.msg.startswith("Will not run") and not record.args:
            lines = [ln for ln in record.msg.splitlines() if ln.strip()]
            match = _LAST_LINE.match(lines[-1].strip()) if lines else None
            if match:
                record.msg = f"ERROR: {match.group(1)}"
                record.levelno, record.levelname = logging.ERROR, "ERROR"
        return True


logging.getLogger("luigi-interface").addFilter(_OneLineErrors())

from .tasks import PopulateManifest, RunBatch  # noqa: E402  (Luigi finds tasks by importing this module)

__all__ = ["PipelineError", "PopulateManifest", "RunBatch"]
