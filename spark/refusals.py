"""When AWS says no: one line naming who asked, for which IAM action, on what, and what AWS answered.

A refusal is an answer that every retry and every batch would get again: access denied, credentials unknown or
expired, a bucket or table that does not exist, an endpoint nothing answers at. The job and the pipeline tell it
the same way, through `refusal(e)`, so an operator reads one line naming what to fix wherever AWS said no. Every
other AWS failure (throttling or 5xx past its retries, a dropped connection) is `explained` in one line too, but is
not a refusal: it may not happen again.

Clients passed through `watch(client, identity)` remember, for each request, who sent it (the identity's label),
its IAM action and its resource, so the line needs nothing from the call site. They also do not retry an endpoint
that has never answered: a wrong endpoint or no network is said at once, not after a minute of backoff (the job's
clients keep retrying, as executors meet passing DNS and network faults).
"""
from __future__ import annotations

import html
import re
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlparse

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
    SSLError,
)

from spark.errors import error_line, one_line

MAX_REFUSAL = 300  # characters of a refusal's line, the command's last line
JOB_LOG_PREFIX = "refused: "  # the job's log line telling a refusal once, whether or not a report could hold it
DEFAULT_CHAIN = "the default AWS credential chain"
DENIED, CREDENTIALS, MISSING, UNREACHABLE = "denied", "credentials", "missing", "unreachable"

# AWS's own codes, by what they mean for the operator (S3, DynamoDB, EMR, STS and KMS spell them differently).
CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidSignatureException", "UnrecognizedClientException",
    "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "InvalidToken",
    "MissingAuthenticationToken", "MissingAuthenticationTokenException", "IncompleteSignature",
    "IncompleteSignatureException", "AuthFailure", "RequestExpired", "RequestTimeTooSkewed",
})
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "Forbidden", "403",
                          "KMS.AccessDeniedException", "NotAuthorized", "UnauthorizedOperation"})
MISSING_CODES = frozenset({"NoSuchBucket", "ResourceNotFoundException", "NotFoundException"})
# S3 operations whose IAM action is not s3:<Operation>; every other service's action is <prefix>:<Operation>.
S3_ACTIONS = {"ListObjectsV2": "ListBucket", "ListObjects": "ListBucket", "HeadBucket": "ListBucket",
              "HeadObject": "GetObject", "DeleteObjects": "DeleteObject"}
_NAMED_ACTION = re.compile(r"not authorized to perform:? ([a-z0-9-]+:[A-Za-z0-9*]+)")
_XML_FIELD = re.compile(r"<(Code|Message)>(.*?)</\1>", re.S)
_OS_REASON = re.compile(r"\[Errno -?\d+\] ([^'\"()]+)")


def iam_action(signing_name: str, operation: str) -> str:
    """The IAM action of a botocore operation, e.g. ('s3', 'ListObjectsV2') -> 's3:ListBucket'."""
    if signing_name == "s3":
        return f"s3:{S3_ACTIONS.get(operation, operation)}"
    return f"{signing_name}:{operation}"


def s3_resource(bucket: str, key: str = "") -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def table_resource(table: str, region: Optional[str]) -> str:
    return f"DynamoDB table '{table}' in {region or 'the default region'}"


def profile_identity(profile: str) -> str:
    return f"AWS profile '{profile}'" if profile else DEFAULT_CHAIN


def keys_identity(config_file: str) -> str:
    """The storage config's own keys, naming the file that holds them."""
    return f"the storage config's keys ({config_file})"


def instance_profile_identity(role: str) -> str:
    return f"the EMR cluster's instance profile ({role})"


def request_resource(service: str, params: Dict[str, Any], region: Optional[str]) -> str:
    """What a request acts on, as an operator names it: s3://bucket/key, a table and its region, a cluster."""
    if service == "s3":
        return s3_resource(params.get("Bucket", "?"), params.get("Key") or params.get("Prefix") or "")
    if service == "dynamodb":
        table = (params.get("TableName") or next(iter(params.get("RequestItems") or {}), None)
                 or (params.get("TableCreationParameters") or {}).get("TableName"))
        return table_resource(table, region) if table else f"DynamoDB in {region}"
    if service == "emr":
        cluster = params.get("ClusterId") or params.get("JobFlowId") or ",".join(params.get("JobFlowIds") or [])
        return f"EMR cluster {cluster} in {region}" if cluster else f"EMR in {region}"
    return f"{service} in {region}"


@dataclass(frozen=True)
class Request:
    """What a watched client's request was: who sent it, its IAM action, its resource and the endpoint."""

    identity: str
    action: str
    resource: str
    endpoint: str = ""


@dataclass(frozen=True)
class Refusal:
    kind: str  # DENIED, CREDENTIALS, MISSING or UNREACHABLE
    request: Request
    code: str = ""
    message: str = ""

    def line(self, limit: int = MAX_REFUSAL) -> str:
        """One line of at most `limit` characters, AWS's own words cut first."""
        r = self.request
        if self.kind == DENIED:
            head = f"AWS denied {r.action} on {r.resource} to {r.identity} (grant it: --dry-run prints the policy)"
        elif self.kind == CREDENTIALS:
            head = (f"AWS rejected the credentials of {r.identity} (unknown or expired access key or security "
                    f"token) for {r.action} on {r.resource}")
        elif self.kind == MISSING:
            head = f"{r.resource} does not exist ({r.action} by {r.identity})"
        else:
            head = f"cannot connect to the endpoint {r.endpoint or '?'} for {r.action} on {r.resource}"
        said = ": ".join(p for p in (self.code, self.message) if p)
        return fit(head, said, limit)


def fit(head: str, said: str, limit: int = MAX_REFUSAL) -> str:
    """`head: said` on one line within `limit` characters, `said` cut (with '...') to make room."""
    head, said = one_line(head), one_line(said)
    if not said:
        return head[:limit]
    room = limit - len(head) - 2
    if room < 12:
        return head[:limit]
    return f"{head}: {said if len(said) <= room else said[:room - 3] + '...'}"


def aws_said(e: ClientError) -> tuple:
    """(code, message) of an AWS error response; an XML body where JSON was expected (moto's DynamoDB refusals)
    is read for its own Code and Message."""
    error = e.response.get("Error") or {}
    code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
    if message.lstrip().startswith("<"):
        fields = dict(_XML_FIELD.findall(message))
        code, message = fields.get("Code", code), html.unescape(fields.get("Message", ""))
    return code, message


def status_of(e: ClientError) -> int:
    return int((e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)


def recorded(e: BaseException) -> Optional[Request]:
    """What a watched client recorded of the failed request, if it was one of theirs."""
    found = getattr(e, "manifest_request", None)
    if found is None and isinstance(e, ClientError):
        found = e.response.get("ManifestRequest")
    return Request(**found) if isinstance(found, dict) else None


def refusal(e: BaseException, identity: str = "", action: str = "", resource: str = "") -> Optional[Refusal]:
    """The refusal `e` is, or None. What the caller passes wins over what a watched client recorded."""
    seen = recorded(e) or Request("", "", "")
    request = Request(identity or seen.identity or DEFAULT_CHAIN, action or seen.action or "?",
                      resource or seen.resource or "?", seen.endpoint)
    if isinstance(e, ClientError):
        code, message = aws_said(e)
        named = _NAMED_ACTION.search(message)
        if named and not action:  # AWS names the action it refused (iam:PassRole behind RunJobFlow, say)
            request = Request(request.identity, named.group(1), request.resource, request.endpoint)
        if code in CREDENTIAL_CODES:
            return Refusal(CREDENTIALS, request, code, message)
        if code in DENIED_CODES or (status_of(e) == 403 and not code):
            return Refusal(DENIED, request, code, message or "Forbidden")
        if code in MISSING_CODES:
            if code == "NoSuchBucket" and request.resource.startswith("s3://"):  # the bucket is what is missing
                bucket = request.resource.split("/")[2]
                request = Request(request.identity, request.action, s3_resource(bucket), request.endpoint)
            return Refusal(MISSING, request, code, message)
        return None
    if isinstance(e, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return Refusal(CREDENTIALS, request, type(e).__name__, str(e))
    if isinstance(e, (EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError, SSLError)):
        url = getattr(e, "kwargs", {}).get("endpoint_url") or getattr(e, "kwargs", {}).get("proxy_url") or ""
        endpoint = request.endpoint or base_url(url)
        reason = _OS_REASON.search(str(getattr(e, "kwargs", {}).get("error", "")))
        why = reason.group(1).strip() if reason else type(e).__name__
        return Refusal(UNREACHABLE, Request(request.identity, request.action, request.resource, endpoint), "", why)
    return None


def explained(e: BaseException, identity: str = "", action: str = "", resource: str = "") -> Optional[str]:
    """One line for any AWS failure (a refusal's, or what failed past its retries), None for other errors."""
    found = refusal(e, identity, action, resource)
    if found is not None:
        return found.line()
    if not isinstance(e, (ClientError, BotoCoreError)):
        return None
    seen = recorded(e) or Request(identity or DEFAULT_CHAIN, action or "?", resource or "?")
    said = ": ".join(p for p in aws_said(e) if p) if isinstance(e, ClientError) else f"{type(e).__name__}: {e}"
    return fit(f"AWS {action or seen.action} on {resource or seen.resource} by {identity or seen.identity} failed",
               said)


class Told(Exception):
    """An AWS failure already told in one line (its str), by code that knew the request better than a client's
    record of it; `refused` says whether it is a refusal."""

    def __init__(self, line: str, refused: bool):
        super().__init__(line)
        self.refused = refused


def told(e: BaseException) -> Tuple[str, bool]:
    """(one line, whether it is a refusal) for any error: AWS's explained, any other as 'Type: message'."""
    if isinstance(e, Told):
        return str(e), e.refused
    found = refusal(e)
    if found is not None:
        return found.line(), True
    return explained(e) or error_line(e), False


def base_url(url: str) -> str:
    """scheme://host[:port] of a request's URL: where it went, without the path and query of the request."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}" if parsed.scheme and parsed.netloc else url


_CONNECT_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError)
_IDENTITIES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def identity_of(client) -> str:
    """Who a watched client sends its requests as (the default chain for any other client)."""
    try:
        return _IDENTITIES.get(client, DEFAULT_CHAIN)
    except TypeError:  # not weakly referable: a test's stand-in
        return DEFAULT_CHAIN


def watch(client, identity: str, fail_fast: bool = True):
    """`client`, its failures recording who asked for what (see `refusal`); with `fail_fast`, an endpoint that has
    never answered is not retried. Returns the client."""
    model = client.meta.service_model
    service, signing, region = model.service_name, model.signing_name, client.meta.region_name
    endpoint = base_url(client.meta.endpoint_url or "")
    answered = []

    def request(context: Dict[str, Any]) -> Optional[Dict[str, str]]:
        """What the failed request was for, worked out only now that it failed."""
        sent = context.get("manifest_request")
        if sent is None:
            return None
        operation, params = sent
        return asdict(Request(identity, iam_action(signing, operation), request_resource(service, params, region),
                              endpoint))

    def before(params: Dict[str, Any], model, context: Dict[str, Any], **_) -> None:
        context["manifest_request"] = (model.name, params)  # kept cheap: every request passes here

    def after(http_response, parsed: Dict[str, Any], context: Dict[str, Any], **_) -> None:
        if not answered:
            answered.append(True)
        if http_response.status_code >= 300:
            parsed["ManifestRequest"] = request(context)

    def after_error(exception: BaseException, context: Dict[str, Any], **_) -> None:
        exception.manifest_request = request(context)

    def first_contact(caught_exception: Optional[BaseException] = None, **_) -> None:
        if caught_exception is not None and not answered and isinstance(caught_exception, _CONNECT_ERRORS):
            raise caught_exception  # botocore would retry with backoff: nothing has ever answered there

    _IDENTITIES[client] = identity
    events = client.meta.events
    events.register("before-parameter-build", before)
    events.register("after-call", after)
    events.register("after-call-error", after_error)
    if fail_fast:
        events.register_first("needs-retry", first_contact)
    return client
