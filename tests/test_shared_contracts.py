"""The contracts spark/ and pipeline/ share from one home: run ids and the names made from them, error text, "not
found", the item's key schema and the report's location."""
import pytest
from botocore.exceptions import ClientError

from spark.errors import MAX_LINE, error_line, is_not_found, one_line, spark_error_line
from spark.manifest import ATTRIBUTES, KEY_SCHEMA, MANIFEST_KEY_SHAPE, ManifestItem, import_line, key_shape
from spark.report import report_location
from spark.runid import file_name, folder_name, run_of_file, run_of_folder
from spark.storage import parse_location

RUN = "2026-05-01-12-00-00"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "GetObject")


def test_run_names_round_trip():
    assert folder_name(RUN) == f"run={RUN}" and run_of_folder(folder_name(RUN)) == RUN
    assert file_name(RUN) == f"run={RUN}.json" and run_of_file(file_name(RUN)) == RUN
    assert run_of_folder("run=2026-13-01-00-00-00") is None and run_of_folder(RUN) is None
    assert run_of_file("run=.json") is None and run_of_file("_leases") is None and run_of_file(f"run={RUN}") is None
    assert report_location(parse_location("s3://ops/reports/b1"), RUN).uri == f"s3://ops/reports/b1/run={RUN}.json"


def test_error_text_is_one_line_and_never_holds_a_key_id():
    assert one_line(f"denied\n  for {KEY_ID}\tnow") == "denied for <redacted> now"
    assert error_line(ValueError(f"bad\nkey {KEY_ID}")) == "ValueError: bad key <redacted>"
    assert len(error_line(ValueError("x" * 2000))) == MAX_LINE
    failure = Exception(f"Job aborted\nTraceback:\n  ...\nValueError: first\nbotocore.exceptions.NoCredentialsError: "
                        f"no {KEY_ID}\n\tat org.apache.spark...")
    assert spark_error_line(failure) == "botocore.exceptions.NoCredentialsError: no <redacted>"
    assert spark_error_line(Exception("\n  java.lang.OutOfMemoryError\n  at x")) == "java.lang.OutOfMemoryError"


@pytest.mark.parametrize("error, absent", [
    (FileNotFoundError("x"), True), (client_error("NoSuchKey"), True), (client_error("404"), True),
    (client_error("NotFound"), True), (client_error("NoSuchBucket"), False), (client_error("AccessDenied"), False),
    (KeyError("x"), False),
])
def test_not_found_is_an_absent_object_only(error, absent):
    assert is_not_found(error) is absent


def test_the_key_schema_is_the_items_key():
    assert MANIFEST_KEY_SHAPE == [("eventId", "S", "HASH"), ("fingerprint", "S", "RANGE")]
    assert key_shape(KEY_SCHEMA, ATTRIBUTES[:1]) == [("eventId", "S", "HASH"), ("fingerprint", "?", "RANGE")]
    line = import_line(ManifestItem("e", "f", 1, 2, RUN))
    assert line == b'{"Item":{"eventId":{"S":"e"},"fingerprint":{"S":"f"},"etlTime":{"N":"1"},"ttl":{"N":"2"}}}\n'
