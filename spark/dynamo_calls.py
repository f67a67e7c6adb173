"""The job's DynamoDB calls sent on botocore's lower layers: the same requests for much less client CPU.

Why: a call through a botocore client spends most of its client CPU walking the service model to serialise the
items and parse the answer, emitting events and resolving the endpoint, every time; the job's requests are already
in DynamoDB's wire form (spark.manifest), and the client's own share of a batch call outweighs the rest of fast
mode's work (bench.write measures it against boto3's own batch_write_item).

Nothing of what is sent changes. The client resolves each operation once per table, in a call that a `before-call`
handler answers before anything is sent, recording the request as botocore built it (URL, method, headers with the
User-Agent, signing context) and the client's RequestSigner. Each later call is that request with the params as
JSON (json.dumps, as botocore's JSON serializer writes it), botocore's retry headers, signed by that signer, sent on
a URLLib3Session set up as the client's (timeouts, pool, proxies, CA bundle, socket options). A success is read
with json.loads. A failure is parsed by botocore's own parser and raised as the client's exception class, so its
code, message, HTTP status and operation name are what the client's ClientError holds, whatever the body (JSON or
not); connection errors are the session's, as the client's are. botocore's retry handler is not run: the job's
client makes one attempt (TableRequests retries), whose retry metadata is set here as that handler sets it.
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


class Resolved(NamedTuple):
    """One operation's request as the client built it, without its body."""
    url: str
    method: str
    headers: Dict[str, Any]
    context: Dict[str, Any]
    signer: Any  # the client's botocore.signers.RequestSigner
    model: Any  # botocore.model.OperationModel


class DirectCalls:
    """call(operation, params) for one client, as the client would send it (see the module's docstring)."""

    def __init__(self, client, ca_bundle: Optional[str], tcp_keepalive: bool) -> None:
        meta, config = client.meta, client.meta.config
        self.client = weakref.ref(client)  # the client holds this object (its event handler): no cycle
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
        self.max_attempts = (config.retries or {}).get("total_max_attempts")
        self.attempt_header = "attempt=1" + (f"; max={self.max_attempts}" if self.max_attempts else "")
        self.resolved: Dict[Tuple[str, Union[str, tuple]], Resolved] = {}
        self.probing = threading.local()
        meta.events.register(f"before-call.{meta.service_model.service_id.hyphenize()}", self.record)

    def call(self, operation: str, params: dict) -> dict:
        """The operation's answer as the client returns it for these requests; the client's ClientError if not."""
        tables = params.get("TableName") or tuple(params.get("RequestItems", ()))
        resolved = self.resolved.get((operation, tables)) or self.resolve(operation, tables, params)
        request = AWSRequest(method=resolved.method, url=resolved.url, data=json.dumps(params).encode("utf-8"),
                             headers=resolved.headers)
        request.context = dict(resolved.context)
        resolved.signer.sign(operation, request)
        request.headers["amz-sdk-invocation-id"] = str(uuid.uuid4())  # added unsigned, as botocore does
        request.headers["amz-sdk-request"] = self.attempt_header
        response = self.http.send(request.prepare())
        if response.status_code >= 300:
            raise self.error(operation, resolved.model, response)
        body = response.content
        return json.loads(body) if body else {}

    def resolve(self, operation: str, tables: Union[str, tuple], params: dict) -> Resolved:
        """The client's request for this operation and table, from a call answered before it is sent."""
        client = self.client()
        if client is None:
            raise RuntimeError("the DynamoDB client of these calls is gone")
        self.probing.seen = None
        self.probing.active = True
        try:
            getattr(client, xform_name(operation))(**params)
        finally:
            self.probing.active = False
        self.resolved[(operation, tables)] = resolved = self.probing.seen
        return resolved

    def record(self, params: dict, request_signer, context: dict, model, **_) -> Optional[tuple]:
        """`before-call` handler: during resolve() only, keep the request and answer it without sending it."""
        if not getattr(self.probing, "active", False):
            return None
        self.probing.seen = Resolved(params["url"], params["method"], dict(params["headers"]), dict(context),
                                     request_signer, model)
        return AWSResponse(params["url"], 200, {}, None), {}

    def error(self, operation: str, model, response) -> Exception:
        """The client's exception for a failed answer, parsed as the client parses it."""
        answer = convert_to_response_dict(response, model)
        parsed = self.parser.parse(answer, model.output_shape)
        code = parsed.get("Error", {}).get("Code")
        shape = model.service_model.shape_for_error_code(code) if code else None
        if shape is not None:  # the error's modelled fields, as the client adds them
            parsed.update(self.parser.parse(answer, shape))
        metadata = parsed.setdefault("ResponseMetadata", {})
        if self.max_attempts == 1:  # botocore's standard retry mode flags every answer of a one-attempt client
            metadata["MaxAttemptsReached"] = True
        metadata["RetryAttempts"] = 0
        return self.exceptions.from_code(code)(parsed, operation)


def verify_value(ca_bundle: Optional[str]):
    """TLS verification as botocore's endpoint takes it: the configured CA bundle, else REQUESTS_CA_BUNDLE, else on."""
    return ca_bundle if ca_bundle is not None else os.environ.get("REQUESTS_CA_BUNDLE", True)


def socket_options(tcp_keepalive: bool) -> list:
    """A botocore client's socket options: no Nagle delay, and keep-alive when configured."""
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    if tcp_keepalive:
        options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    return options
