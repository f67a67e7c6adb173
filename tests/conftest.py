"""Shared real parts for the tests: a moto server on 127.0.0.1, one SparkSession, an HTTP Iglu repository."""
from __future__ import annotations

import functools
import http.server
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from bench import servers
from pipeline.tasks import command, console
from tests import spark_classes
from tests.iam_world import enforcing

ROOT = Path(__file__).resolve().parent.parent
SHARED_IGLU = ROOT.parent / "shared" / "iglu"

# Nothing in the tests may reach real AWS: fake credentials and a region before any boto3 import.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
# Every Spark JVM the tests start (the runners' spark-submit, the in-process session) is short-lived: the client
# compiler alone and no web UI halve its start-up CPU, which the suite pays once per job.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dspark.ui.enabled=false")


def pytest_configure(config):
    """Spark's classes from one shared archive (tests/spark_classes.py), made by the first process before its
    workers start, so that every JVM of the suite maps them instead of loading them."""
    options = os.environ["SPARK_SUBMIT_OPTS"]
    if "SharedArchiveFile" in options:
        return
    worker = hasattr(config, "workerinput")  # an xdist worker: the controller made the archive already
    path = spark_classes.archive_path() if worker else spark_classes.ensure_archive(options)
    if path is not None and path.exists():
        os.environ["SPARK_SUBMIT_OPTS"] = f"{options} -XX:SharedArchiveFile={path}"


# The files whose tests start Spark jobs or luigi processes, the longest first (`--durations=0`, summed per file):
# `make test` hands whole files to its workers in collection order (`--dist loadfile --no-loadscope-reorder`), so
# these start first and the quick files fill the gaps, instead of a long file starting last and running alone.
LONGEST_FIRST = ("test_cli_kill_and_rivals.py", "test_cli_maintenance.py", "test_emr_backfill.py", "test_faults.py",
                 "test_iam_enforced_write.py", "test_cli_backfill.py", "test_iam_enforced_other.py", "test_luigid.py",
                 "test_cli_import.py", "test_cli_refusals.py", "test_job.py", "test_graph.py", "test_bench.py")


def pytest_collection_modifyitems(config, items):
    missing = [name for name in LONGEST_FIRST if not (ROOT / "tests" / name).exists()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names files that do not exist: {missing}")
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order is kept


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto server for the session; AWS_ENDPOINT_URL points every boto3 client (and Spark) at it."""
    proc, url = servers.start_moto_server()
    old = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = url
    yield url
    if old is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    else:
        os.environ["AWS_ENDPOINT_URL"] = old
    servers.stop(proc)


@pytest.fixture
def moto_reset(moto_endpoint):
    """A clean moto state for one test."""
    servers.reset_moto(moto_endpoint)
    return moto_endpoint


@pytest.fixture(scope="session")
def spark_session():
    """One SparkSession for the whole run: starting one costs ~20 s here."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("manifest-populator-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .getOrCreate()
    )
    yield spark
    spark.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def iglu_http():
    """../shared/iglu served over real HTTP on 127.0.0.1, as a static Iglu repository."""
    handler = functools.partial(_QuietHandler, directory=str(SHARED_IGLU))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(autouse=True)
def nothing_at_exit():
    """A backfill run in-process whose batch failed would write its summary as pytest exits, to a moto server that
    is gone by then: each test's own end is its process's end."""
    yield
    command.AT_EXIT.clear()
    console.ONE_LINE_ERRORS.messages.clear()  # and the command's last lines, repeated at exit


@pytest.fixture
def luigid(tmp_path):
    """A real luigid on 127.0.0.1 for one test (tests.cli.Luigid), stopped at its end."""
    from tests.cli import start_luigid

    scheduler = start_luigid(tmp_path / "luigid")
    yield scheduler
    scheduler.stop()


@pytest.fixture
def standin(moto_reset, monkeypatch):
    """Start capacity-enforcing DynamoDB stand-ins (bench/dynamo_endpoint.py) in front of the moto server and point
    DynamoDB clients at the latest one."""
    from bench.dynamo_endpoint import start_endpoint, stop

    started = []

    def start(wcu, **options):
        server, url = start_endpoint(moto_reset, wcu, **options)
        started.append(server)
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", url)
        return url

    yield start
    for server in started:
        stop(server)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def iam_world(tmp_path_factory):
    """A moto server of the module's own that enforces IAM, with its users and archive (tests/iam_world.py)."""
    with enforcing(tmp_path_factory.mktemp("iam")) as world:
        yield world
