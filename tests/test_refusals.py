"""AWS refusals in one line (spark/refusals.py): from AWS's own error responses, JSON and XML alike, and from
real clients pointed at a closed port."""
from __future__ import annotations

import http.server
import json
import threading

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from bench.servers import free_port
from spark import refusals
from spark.dynamo import WriteError, dynamodb_client
from spark.manifest import ManifestItem
from spark.ratelimit import TokenBucket
from spark.refusals import CREDENTIALS, DENIED, MISSING, UNREACHABLE, Request, explained, refusal, watch
from spark.writer import write_items

TABLE = refusals.table_resource("manifest", "us-east-1")
KEYS = refusals.keys_identity("dynamodb.json")


def client_error(code: str, message: str, operation: str = "DescribeTable", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def test_dynamodb_access_denied_as_dynamodb_answers_it():
    e = client_error("AccessDeniedException", "User: arn:aws:iam::123456789012:user/populator is not authorized to "
                     "perform: dynamodb:DescribeTable on resource: arn:aws:dynamodb:us-east-1:123456789012:table/"
                     "manifest because no identity-based policy allows the dynamodb:DescribeTable action")
    found = refusal(e, KEYS, "dynamodb:DescribeTable", TABLE)
    line = found.line()
    assert found.kind == DENIED and len(line) <= 300
    assert line.startswith("AWS denied dynamodb:DescribeTable on DynamoDB table 'manifest' in us-east-1 to the "
                           "storage config's keys (dynamodb.json)")
    assert "AccessDeniedException: User: arn:aws:iam::123456789012:user/populator is not authorized" in line
    assert line.endswith("...")  # AWS's message is cut, never the action or the resource


def test_an_xml_body_where_json_was_expected_is_read_for_its_code_and_message():
    """moto answers DynamoDB refusals as XML with HTTP 403; botocore's JSON parser leaves the body as the message."""
    xml = ('<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code>'
           '<Message>The security token included in the request is invalid.</Message><Type>Sender</Type></Error>'
           '</Errors></ErrorResponse>')
    found = refusal(client_error("403", xml, status=403), KEYS, "dynamodb:DescribeTable", TABLE)
    assert found.kind == CREDENTIALS
    assert (found.code, found.message) == ("InvalidClientTokenId", "The security token included in the request is "
                                                                   "invalid.")
    assert "<" not in found.line() and "security token" in found.line()


@pytest.mark.parametrize("code,kind", [
    ("UnrecognizedClientException", CREDENTIALS), ("InvalidAccessKeyId", CREDENTIALS),
    ("ExpiredTokenException", CREDENTIALS), ("SignatureDoesNotMatch", CREDENTIALS),
    ("AccessDenied", DENIED), ("NoSuchBucket", MISSING), ("ResourceNotFoundException", MISSING),
])
def test_codes_by_what_they_mean(code, kind):
    assert refusal(client_error(code, "said")).kind == kind


def test_what_is_not_a_refusal_is_still_one_line_but_not_a_refusal():
    e = client_error("InternalServerError", "try again", "BatchWriteItem", 500)
    assert refusal(e) is None
    assert explained(e, KEYS, "dynamodb:BatchWriteItem", TABLE) == (
        "AWS dynamodb:BatchWriteItem on DynamoDB table 'manifest' in us-east-1 by the storage config's keys "
        "(dynamodb.json) failed: InternalServerError: try again")
    assert refusal(client_error("NoSuchKey", "absent", "GetObject", 404)) is None  # an answer, not a refusal
    assert explained(ValueError("not AWS")) is None


def test_a_head_request_refused_without_a_body_is_access_denied():
    e = client_error("403", "Forbidden", "HeadObject", 403)
    assert refusal(e).kind == DENIED


def test_aws_naming_the_action_it_refused_wins_over_the_request_s():
    e = client_error("AccessDeniedException", "User: arn:aws:iam::1:user/u is not authorized to perform: "
                     "iam:PassRole on resource: arn:aws:iam::1:role/EMR_DefaultRole", "RunJobFlow")
    e.response["ManifestRequest"] = vars(Request("AWS profile 'ops'", "elasticmapreduce:RunJobFlow",
                                                 "EMR in eu-west-1"))
    line = refusal(e).line()
    assert "AWS denied iam:PassRole on EMR in eu-west-1 to AWS profile 'ops'" in line


def test_no_credentials_at_all():
    found = refusal(NoCredentialsError(), action="s3:ListBucket", resource="s3://archive/enriched/")
    assert found.kind == CREDENTIALS and "the default AWS credential chain" in found.line()


def test_the_line_redacts_anything_shaped_like_an_access_key_id():
    line = refusal(client_error("InvalidAccessKeyId", "key AKIAABCDEFGHIJKLMNOP is unknown")).line()
    assert "AKIAABCDEFGHIJKLMNOP" not in line and "<redacted>" in line


@pytest.mark.parametrize("service", ["s3", "dynamodb"])
def test_a_closed_port_is_said_at_once_naming_the_endpoint(service):
    endpoint = f"http://127.0.0.1:{free_port()}"
    client = watch(boto3.client(service, region_name="us-east-1", endpoint_url=endpoint), refusals.DEFAULT_CHAIN)
    sent = []
    client.meta.events.register("before-send", lambda **kw: sent.append(1))
    with pytest.raises(EndpointConnectionError) as failed:
        if service == "s3":
            client.list_objects_v2(Bucket="archive", Prefix="enriched/")
        else:
            client.describe_table(TableName="manifest")
    assert len(sent) == 1  # botocore alone would retry it with backoff, for many seconds
    found = refusal(failed.value)
    assert found.kind == UNREACHABLE
    resource = "s3://archive/enriched/" if service == "s3" else TABLE
    assert found.line() == (f"cannot connect to the endpoint {endpoint} for {refusals.iam_action(service, 'x')[:-1]}"
                            f"{'ListBucket' if service == 's3' else 'DescribeTable'} on {resource}: "
                            "Connection refused")


class _Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"<ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_watched_client_that_has_answered_retries_a_dropped_endpoint_as_before():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = Config(retries={"total_max_attempts": 3, "mode": "standard"})
    client = watch(boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{server.server_port}",
                                config=config), refusals.DEFAULT_CHAIN)
    sent = []
    client.meta.events.register("before-send", lambda **kw: sent.append(1))
    client.list_buckets()  # it answered: from now on a connection error may pass, and is retried
    server.shutdown()
    server.server_close()
    with pytest.raises(EndpointConnectionError) as failed:
        client.list_buckets()
    assert len(sent) == 1 + 3
    assert refusal(failed.value).kind == UNREACHABLE  # still told in one line once the retries are spent


class _Denies(http.server.BaseHTTPRequestHandler):
    """Answers every DynamoDB request as DynamoDB itself refuses one: JSON, HTTP 400, AccessDeniedException."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        operation = self.headers["X-Amz-Target"].split(".")[-1]
        body = json.dumps({"__type": "com.amazon.coral.service#AccessDeniedException",
                           "message": f"User: arn:aws:iam::123456789012:user/populator is not authorized to perform: "
                                      f"dynamodb:{operation} on resource: arn:aws:dynamodb:us-east-1:123456789012:"
                                      "table/manifest because no identity-based policy allows the action"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def denying_dynamodb():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Denies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_dynamodb_s_own_json_refusal_through_a_watched_client(denying_dynamodb):
    client = watch(boto3.client("dynamodb", region_name="us-east-1", endpoint_url=denying_dynamodb), KEYS)
    with pytest.raises(ClientError) as failed:
        client.describe_table(TableName="manifest")
    line = refusal(failed.value).line()
    assert line.startswith("AWS denied dynamodb:DescribeTable on DynamoDB table 'manifest' in us-east-1 to the "
                           "storage config's keys (dynamodb.json)")
    assert "AccessDeniedException: User: arn:aws:iam::123456789012:user/populator is not authorized" in line


def test_the_job_s_writes_refused_as_dynamodb_refuses_them(denying_dynamodb):
    """The job's own request path (spark.dynamo.TableRequests): one WriteError, a refusal, naming its action."""
    client = dynamodb_client("us-east-1", {"accessKeyId": "AKIAEXAMPLEEXAMPLE12", "secretAccessKey": "s"},
                             endpoint_url=denying_dynamodb, identity=KEYS)
    items = [ManifestItem(f"e{i}", "f", 100, 200, "2026-05-01-00-00-00") for i in range(3)]
    for mode, action in (("fast", "dynamodb:BatchGetItem"), ("conditional", "dynamodb:PutItem")):
        with pytest.raises(WriteError) as failed:
            write_items(items, client=client, table="manifest", mode=mode, limiter=TokenBucket(1000.0))
        assert failed.value.refused
        assert str(failed.value).startswith(f"AWS denied {action} on DynamoDB table 'manifest' in us-east-1 to the "
                                            "storage config's keys (dynamodb.json)"), str(failed.value)
        assert len(str(failed.value)) <= 300
