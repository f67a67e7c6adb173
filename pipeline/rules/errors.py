"""The one exception type whose message is shown to the user as-is, on one line, and AWS's failures made into it.

Wherever the pipeline talks to AWS, a failure leaves it through `aws_errors()`: a refusal (access denied, unknown
or expired credentials, a missing bucket or table, an endpoint nothing answers at) becomes AwsRefused, which stops
the backfill from starting more batches, and any other AWS failure past its retries one line as well
(spark/refusals.py words them for the job and the pipeline alike).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from spark.errors import one_line
from spark.refusals import Told, explained, refusal


class PipelineError(Exception):
    """A problem the user can fix (bad config, bad parameter, missing table); str() is the whole message."""


class AwsRefused(PipelineError):
    """AWS refused a request in a way that every retry and every later batch would meet again."""


def aws_error(e: BaseException, what: str) -> PipelineError:
    """AwsRefused in AWS's own line for a refusal (it names the action and the resource), else `what: why`."""
    found = refusal(e)
    if found is not None:
        return AwsRefused(found.line())
    return PipelineError(f"{what}: {explained(e) or one_line(e)}")


@contextmanager
def aws_errors() -> Iterator[None]:
    """AWS's failures within the block as one line: AwsRefused for a refusal, PipelineError for the rest."""
    try:
        yield
    except PipelineError:
        raise
    except Told as e:
        raise (AwsRefused if e.refused else PipelineError)(str(e)) from None
    except Exception as e:
        found = refusal(e)
        if found is not None:
            raise AwsRefused(found.line()) from None
        line = explained(e)
        if line is None:
            raise
        raise PipelineError(line) from None
