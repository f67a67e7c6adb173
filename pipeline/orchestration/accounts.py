"""Which AWS account each identity of a backfill is in, and the EMR region: what its IAM policies' ARNs need.

STS GetCallerIdentity needs no permission (AWS answers it even under an explicit deny), so asking costs the
operator nothing to grant. An identity that cannot be asked (no credentials, no network) leaves its account
unknown, and the policies say so rather than guess.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.configs.emr_settings import EmrSettings
from pipeline.rules.errors import PipelineError
from pipeline.runners.emr import session_for
from spark.refusals import DEFAULT_CHAIN, watch

from .context import Context

log = logging.getLogger("manifest.accounts")


@dataclass(frozen=True)
class AwsFacts:
    """The account of the identity that sends the pipeline's DynamoDB requests (the table's account), and for the
    EMR runner the account and region of its EMR requests; None where they could not be learnt."""

    table_account: Optional[str]
    emr_account: Optional[str] = None
    emr_region: Optional[str] = None


def caller_account(session) -> Optional[str]:
    """The account of `session`'s credentials, or None (with a warning) when STS cannot tell; an endpoint that
    never answers is not retried (spark.refusals.watch)."""
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=10)
    try:
        return watch(session.client("sts", config=config), DEFAULT_CHAIN).get_caller_identity()["Account"]
    except (BotoCoreError, ClientError) as e:
        log.warning("the AWS account of these credentials is unknown (STS GetCallerIdentity: %s)", type(e).__name__)
        return None


def aws_facts(ctx: Context) -> AwsFacts:
    """The accounts (and EMR region) of this backfill's identities, one STS request each."""
    table_account = caller_account(ctx.config.boto3_session())
    if ctx.params.runner != "emr":
        return AwsFacts(table_account)
    settings = EmrSettings.from_mapping(ctx.emr or {})
    try:
        session = session_for(settings)
    except PipelineError:  # an unknown profile: the real run says so; the policies name no account
        return AwsFacts(table_account, None, settings.region)
    return AwsFacts(table_account, caller_account(session), settings.region or session.region_name)
