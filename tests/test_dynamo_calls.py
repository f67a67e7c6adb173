"""The job's DynamoDB calls on botocore's lower layers send what the client sends and fail as the client fails.

A recording HTTP server stands for DynamoDB: each request is made once through the botocore client and once through
its DirectCalls, and the two are compared byte for byte (body, headers but the date, signature and invocation id),
as are the answers and the exceptions of failed calls (JSON and XML bodies, modelled and unknown codes).
"""
from __future__ import annotations

import http.server
import json
import threading
from typing import List, Tuple

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from bench import servers
from spark.dynamo import DIRECT_CALLS, ClientCalls, TableRequests, dynamodb_client
from spark.dynamo_calls import DirectCalls
from spark.ratelimit import TokenBucket

TABLE = "manifest"
PER_CALL = frozenset({"x-amz-date", "authorization", "amz-sdk-invocation-id"})
ITEM = {"eventId": {"S": "e-1"}, "fingerprint": {"S": "f" * 32}, "etlTime": {"N": "1600000000"},
        "ttl": {"N": "1615552000"}}
KEY = {"eventId": {"S": "e-1"}, "fingerprint": {"S": "f" * 32}}
REQUESTS = [
    ("BatchWriteItem", {"RequestItems": {TABLE: [{"PutRequest": {"Item": ITEM}}, {"DeleteRequest": {"Key": KEY}}]}}),
    ("BatchGetItem", {"RequestItems": {TABLE: {"Keys": [KEY], "ProjectionExpression": "#e, #f, #t",
                                               "ExpressionAttributeNames": {"#e": "eventId", "#f": "fingerprint",
                                                                            "#t": "etlTime"},
                                               "ConsistentRead": True}}}),
    ("PutItem", {"TableName": TABLE, "Item": ITEM, "ConditionExpression": "attribute_not_exists(eventId) OR "
                 "etlTime > :etl", "ExpressionAttributeValues": {":etl": {"N": "1600000000"}}}),
    ("DeleteItem", {"TableName": TABLE, "Key": KEY}),
]


class Recorder(http.server.BaseHTTPRequestHandler):
    """Keeps every request; answers with the server's `answer` (status, content type, body), fixed headers only."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        status, content_type, answer = self.server.answer
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-amzn-RequestId", "REQ123")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def dynamo():
    """(server, client) with the job's client pointed at a recording server answering 200 {} until told otherwise."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen: List[Tuple[str, str, dict, bytes]] = []
    server.answer = (200, "application/x-amz-json-1.0", b"{}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = dynamodb_client("us-east-1", {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "secret"},
                             endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
    yield server, client
    server.shutdown()
    server.server_close()


def both_ways(client, operation: str, params: dict):
    """(outcome through the client, outcome through DirectCalls): the answer, or the exception raised."""
    out = []
    for send in (ClientCalls(client).call, DIRECT_CALLS[client].call):
        try:
            out.append(send(operation, params))
        except Exception as e:  # noqa: BLE001 - compared below
            out.append(e)
    return out


def fixed_part(headers: dict) -> dict:
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    return dict({k: v for k, v in headers.items() if k not in PER_CALL}, signed_headers=signed)


@pytest.mark.parametrize("operation,params", REQUESTS, ids=[op for op, _ in REQUESTS])
def test_a_direct_call_sends_the_clients_request_byte_for_byte(dynamo, operation, params):
    server, client = dynamo
    through_client, direct = both_ways(client, operation, params)
    assert len(server.seen) == 2  # resolving the request sent nothing of its own
    (method1, path1, headers1, body1), (method2, path2, headers2, body2) = server.seen
    assert (method2, path2, body2) == (method1, path1, body1)
    assert body2 == json.dumps(params).encode()
    assert fixed_part(headers2) == fixed_part(headers1)
    assert headers2["user-agent"].startswith("snowplow-manifest-populator Python/")
    assert headers2["x-amz-target"] == f"DynamoDB_20120810.{operation}"
    assert headers2["amz-sdk-invocation-id"] != headers1["amz-sdk-invocation-id"]
    assert through_client.pop("ResponseMetadata")["HTTPStatusCode"] == 200
    assert direct == through_client == {}


def test_temporary_credentials_sign_both_ways_alike(dynamo):
    server, _ = dynamo
    client = dynamodb_client("us-east-1", {"accessKeyId": "ASIDEXAMPLE", "secretAccessKey": "secret",
                                           "sessionToken": "token-1"},
                             endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
    both_ways(client, *REQUESTS[0])
    both_ways(client, *REQUESTS[0])  # resolved once: the second direct call is built from what was recorded
    assert len(server.seen) == 4
    headers = [h for _, _, h, _ in server.seen]
    assert {h["x-amz-security-token"] for h in headers} == {"token-1"}
    assert fixed_part(headers[3]) == fixed_part(headers[2]) == fixed_part(headers[0])
    assert "x-amz-security-token" in fixed_part(headers[3])["signed_headers"]


def test_answers_are_the_clients_for_the_job_s_attributes(dynamo):
    server, client = dynamo
    answer = {"Responses": {TABLE: [dict(KEY, etlTime={"N": "1600000000"}), KEY]},
              "UnprocessedKeys": {TABLE: {"Keys": [KEY], "ConsistentRead": True}}}
    server.answer = (200, "application/x-amz-json-1.0", json.dumps(answer).encode())
    through_client, direct = both_ways(client, *REQUESTS[1])
    through_client.pop("ResponseMetadata")
    assert direct == through_client == answer


@pytest.mark.parametrize("status,content_type,body,code", [
    (400, "application/x-amz-json-1.0",
     b'{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not '
     b'found"}', "ResourceNotFoundException"),
    (400, "application/x-amz-json-1.0",
     b'{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"User: arn:aws:iam::123456789012:user/'
     b'x is not authorized to perform: dynamodb:BatchWriteItem on resource: table/manifest"}',
     "AccessDeniedException"),
    (400, "application/x-amz-json-1.0",
     b'{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"The security token included in '
     b'the request is invalid."}', "UnrecognizedClientException"),
    (400, "application/x-amz-json-1.0",
     b'{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional '
     b'request failed"}', "ConditionalCheckFailedException"),
    (403, "text/xml", b'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error><Code>AccessDenied</Code>'
     b"<Message>Access Denied</Message></Error></ErrorResponse>", "403"),
    (503, "text/plain", b"Service Unavailable", "503"),
])
def test_a_failed_direct_call_raises_what_the_client_raises(dynamo, status, content_type, body, code):
    server, client = dynamo
    server.answer = (status, content_type, body)
    for operation, params in REQUESTS:
        through_client, direct = both_ways(client, operation, params)
        assert isinstance(direct, ClientError) and type(direct) is type(through_client)
        assert direct.operation_name == through_client.operation_name == operation
        assert direct.response["Error"]["Code"] == code
        assert direct.response["ResponseMetadata"]["HTTPStatusCode"] == status
        # the client's own refusal hooks (spark.refusals.watch) record its request; TableRequests says it itself
        through_client.response.pop("ManifestRequest", None)
        assert direct.response == through_client.response
        assert str(direct) == str(through_client)


def test_a_refused_connection_is_the_clients_connection_error():
    url = f"http://127.0.0.1:{servers.free_port()}"
    client = dynamodb_client("us-east-1", {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "secret"},
                             endpoint_url=url)
    through_client, direct = both_ways(client, *REQUESTS[0])
    assert isinstance(direct, EndpointConnectionError) and type(direct) is type(through_client)
    assert str(direct) == str(through_client)


def test_only_the_job_s_clients_send_directly(moto_reset):
    job = dynamodb_client("us-east-1", None)
    assert isinstance(TableRequests(job, TABLE, TokenBucket(1), None, 1.0).calls, DirectCalls)
    other = boto3.client("dynamodb", region_name="us-east-1")
    assert isinstance(TableRequests(other, TABLE, TokenBucket(1), None, 1.0).calls, ClientCalls)
