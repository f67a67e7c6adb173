"""The job's DynamoDB calls sent on botocore's lower layers: the same requests for much less client CPU.

Why: a call through a botocore client spends most of its client CPU walking the service model to serialise the
items and parse the answer, emitting events and resolving the endpoint, every time; the job's requests are already
in DynamoDB's wire form (spark.manifest), and the client's own share of a batch call outweighs the rest of fast
mode's work (bench.write measures it against boto3's own batch_write_item).

Nothing of what is sent changes. The client resolves each operation once per table, in a call that a `before-send`
handler answers before anything is sent: it records the request as botocore built and signed it (URL, method,
headers with the User-Agent and the retry header) and, from `before-call`, the signing context and the client's
RequestSigner. Each later call is that request with the params as JSON (json.dumps, as botocore's JSON serializer
writes it), signed by that signer, its per-request headers set as botocore sets them, sent on a URLLib3Session set
up as the client's (timeouts, pool, proxies, CA bundle, socket options). A success is read with json.loads. A
failure is parsed by botocore's own parser and raised as the client's exception class, with the retry metadata the
client's one attempt adds, so its code, message, HTTP status and operation name are what the client's ClientError
holds, whatever the body (JSON or not); connection errors are the session's, as the client's are.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import uuid
import weakref
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

from botocore import xform_name
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.endpoint import convert_to_response_dict
from botocore.httpsession import URLLib3Session
from botocore.parsers import create_parser
from botocore.utils import get_environ_proxies

PER_REQUEST = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "content-length",
                         "amz-sdk-invocation-id", "amz-sdk-request"})  # set again for every request
RETRY_METADATA = ("MaxAttemptsReached", "RetryAttempts")  # what botocore's retry handler adds to every answer


class Resolved(NamedTuple):
    """One operation's request as the client built it, without its body and what each request sets again."""
    url: str
    method: str
    headers: Dict[str, str]  # signed
    attempt: Optional[str]  # botocore's amz-sdk-request header, added unsigned after signing as botocore does
    retry_metadata: Dict[str, Any]  # added to a failed answer's ResponseMetadata, as the client adds it
    context: Dict[str, Any]
    signer: Any  # the client's botocore.signers.RequestSigner
    model: Any  # botocore.model.OperationModel


class Probe(threading.local):
    """What resolve() has seen of its call so far, in the thread that makes it."""
    active = False
    call: Optional[tuple] = None
    sent: Optional[Any] = None  # the prepared request


class DirectCalls:
    """call(operation, params) for one client, as the client would send it (see the module's docstring)."""

    def __init__(self, client, ca_bundle: Optional[str], tcp_keepalive: bool) -> None:
        meta, config = client.meta, client.meta.config
        self.client = weakref.ref(client)  # the client holds this object (its event handlers): no cycle
        self.exceptions = client.exceptions
        self.parser = create_parser(meta.service_model.protocol)
        self.http = URLLib3Session(
            verify=verify_value(ca_bundle),
            proxies=config.proxies if config.proxies is not None else get_environ_proxies(meta.endpoint_url),
            timeout=(config.connect_timeout, config.read_timeout),
            max_pool_connections=config.max_pool_connections,
            socket_options=socket_options(tcp_keepalive),
            client_cert=config.client_cert,
            proxies_config=config.proxies_config,
        )
        self.resolved: Dict[Tuple[str, Union[str, tuple]], Resolved] = {}
        self.probe = Probe()
        service = meta.service_model.service_id.hyphenize()
        meta.events.register(f"before-call.{service}", self.record_call)
        meta.events.register(f"before-send.{service}", self.record_send)

    def call(self, operation: str, params: dict) -> dict:
        """The operation's answer as the client returns it for these requests; the client's ClientError if not."""
        tables = params.get("TableName") or tuple(params.get("RequestItems", ()))
        resolved = self.resolved.get((operation, tables)) or self.resolve(operation, tables, params)
        request = AWSRequest(method=resolved.method, url=resolved.url, data=json.dumps(params).encode("utf-8"),
                             headers=resolved.headers)
        request.context = dict(resolved.context)
        resolved.signer.sign(operation, request)
        request.headers["amz-sdk-invocation-id"] = str(uuid.uuid4())
        if resolved.attempt is not None:
            request.headers["amz-sdk-request"] = resolved.attempt
        response = self.http.send(request.prepare())
        if response.status_code >= 300:
            raise self.error(operation, resolved, response)
        body = response.content
        return json.loads(body) if body else {}

    def resolve(self, operation: str, tables: Union[str, tuple], params: dict) -> Resolved:
        """The client's request for this operation and table, from a call of the client answered before sending."""
        client = self.client()
        if client is None:
            raise RuntimeError("the DynamoDB client of these calls is gone")
        probe = self.probe
        probe.active, probe.call, probe.sent = True, None, None
        try:
            answer = getattr(client, xform_name(operation))(**params)
        finally:
            probe.active = False
        (context, signer, model), sent = probe.call, probe.sent
        headers = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in sent.headers.items()}
        metadata = answer.get("ResponseMetadata", {})
        resolved = Resolved(sent.url, sent.method, {k: v for k, v in headers.items() if k.lower() not in PER_REQUEST},
                            next((v for k, v in headers.items() if k.lower() == "amz-sdk-request"), None),
                            {k: metadata[k] for k in RETRY_METADATA if k in metadata}, context, signer, model)
        self.resolved[(operation, tables)] = resolved
        return resolved

    def record_call(self, request_signer, context: dict, model, **_) -> None:
        """`before-call` handler: during resolve() only, keep what signing the request takes."""
        if self.probe.active:
            self.probe.call = (dict(context), request_signer, model)

    def record_send(self, request, **_) -> Optional[AWSResponse]:
        """`before-send` handler: during resolve() only, keep the request as sent and answer it without sending."""
        if not self.probe.active:
            return None
        self.probe.sent = request
        return AWSResponse(request.url, 200, {}, EmptyBody())

    def error(self, operation: str, resolved: Resolved, response) -> Exception:
        """The client's exception for a failed answer, parsed as the client parses it."""
        model = resolved.model
        answer = convert_to_response_dict(response, model)
        parsed = self.parser.parse(answer, model.output_shape)
        code = parsed.get("Error", {}).get("Code")
        shape = model.service_model.shape_for_error_code(code) if code else None
        if shape is not None:  # the error's modelled fields, as the client adds them
            parsed.update(self.parser.parse(answer, shape))
        parsed.setdefault("ResponseMetadata", {}).update(resolved.retry_metadata)
        return self.exceptions.from_code(code)(parsed, operation)


class EmptyBody:
    """The body of resolve()'s unsent call: an empty JSON object."""

    def stream(self, **_):
        yield b"{}"


def verify_value(ca_bundle: Optional[str]):
    """TLS verification as botocore's endpoint takes it: the configured CA bundle, else REQUESTS_CA_BUNDLE, else on."""
    return ca_bundle if ca_bundle is not None else os.environ.get("REQUESTS_CA_BUNDLE", True)


def socket_options(tcp_keepalive: bool) -> list:
    """A botocore client's socket options: no Nagle delay, and keep-alive when configured."""
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    if tcp_keepalive:
        options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    return options
