"""The archive generator writes what its truth says, in every file kind, locally and to S3.

Objects are decoded here with zlib and the lines classified by an independent check, so a generator bug cannot
hide behind the job's own parser.
"""
from __future__ import annotations

import gzip
import random
import re
import uuid
import zlib
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest

from bench.archive import generate_archive, main
from bench.archive_objects import FILE_KINDS, big_object, encode_object, object_name
from bench.archive_truth import ArchiveTruth, RunTruth
from bench.event_lines import FIELDS, event_line, new_fingerprint, new_uuid, run_id_at, run_ids, run_time

NAME_PATTERNS = {
    "plain": r"part-\d{5}",
    "gz": r"part-\d{5}\.gz",
    "multigz": r"part-\d{5}\.gz",
    "gzip": r"part-\d{5}\.gzip",
    "csv": r"part-\d{5}-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.csv",
    "csv.gz": r"part-\d{5}-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.csv\.gz",
    "s3loader": r"\d{4}-\d{2}-\d{2}-\d{56}-\d{56}\.gz",
}
RUNS = run_ids(run_time("2026-05-01-00-00-00"), 4)


def gunzip_members(data: bytes) -> list:
    """Each member's inflated bytes."""
    members = []
    while data:
        d = zlib.decompressobj(31)
        members.append(d.decompress(data))
        assert d.eof, "truncated gzip member"
        data = d.unused_data
    return members


def decode(data: bytes) -> bytes:
    return b"".join(gunzip_members(data)) if data[:2] == b"\x1f\x8b" else data


def split_lines(text: bytes) -> list:
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def classify(line: bytes):
    """('field_count'|'event_id'|'etl_tstamp'|'no_fingerprint'|'valid', (event_id, fingerprint, etl ms))."""
    fields = line.split(b"\t")
    if len(fields) != 131:
        return "field_count", None
    try:
        eid = fields[6].decode("ascii")
        if str(uuid.UUID(eid)) != eid:
            raise ValueError
    except ValueError:
        return "event_id", None
    try:
        etl = datetime.strptime(fields[2].decode("ascii"), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    except ValueError:
        return "etl_tstamp", None
    if not fields[129]:
        return "no_fingerprint", None
    return "valid", (eid, fields[129].decode("ascii"), int(etl.timestamp() * 1000 + 0.5))


def test_fields_are_the_131_enriched_fields():
    assert len(FIELDS) == len(set(FIELDS)) == 131
    assert (FIELDS[2], FIELDS[3], FIELDS[6], FIELDS[129], FIELDS[130]) == (
        "etl_tstamp", "collector_tstamp", "event_id", "event_fingerprint", "true_tstamp")


def test_event_line_is_a_realistic_page_view():
    rng = random.Random(3)
    eid, fp = new_uuid(rng), new_fingerprint(rng)
    line = event_line(eid, fp, "2026-05-01 10:00:00.123", rng=rng)
    fields = line.split(b"\t")
    assert len(fields) == 131 and b"\n" not in line and b"\r" not in line
    assert (fields[0][:5], fields[1], fields[2], fields[5]) == (b"acme-", b"web", b"2026-05-01 10:00:00.123",
                                                                b"page_view")
    assert (fields[6], fields[129], fields[130]) == (eid.encode(), fp.encode(), b"")  # trailing empty field
    assert re.fullmatch(rb"[0-9a-f]{32}", fields[129]) and uuid.UUID(eid).version == 4
    assert fields[52].startswith(b'{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0"')
    assert fields[125:129] == [b"com.snowplowanalytics.snowplow", b"page_view", b"jsonschema", b"1-0-0"]
    assert sum(1 for f in fields if f == b"") > 40  # most fields empty, as in real data
    line.decode("utf-8")
    bad = event_line(eid, fp, "2026-05-01 10:00:00.123", rng=rng, invalid_utf8=True)
    assert len(bad.split(b"\t")) == 131
    with pytest.raises(UnicodeDecodeError):
        bad.decode("utf-8")


def test_event_line_sizes():
    rng = random.Random(5)
    lengths = [len(event_line(new_uuid(rng), new_fingerprint(rng), "2026-05-01 10:00:00.000", rng=rng))
               for _ in range(300)]
    assert 1250 <= sum(lengths) / len(lengths) <= 1350
    assert Counter(lengths)[1300] > 50 and max(lengths) < 1500  # the longest bare page views exceed 1,300
    for size in (2000, 4096):
        assert {len(event_line("e", "f", "2026-05-01 10:00:00.000", rng=rng, size=size)) for _ in range(20)} == {size}


def test_run_id_at():
    assert run_id_at(datetime(2026, 5, 1, 7, 8, 9)) == "2026-05-01-07-08-09"
    assert run_id_at(datetime(2026, 5, 1, 9, 8, 9, tzinfo=timezone.utc)) == "2026-05-01-09-08-09"
    assert run_time("2026-05-01-07-08-09") == datetime(2026, 5, 1, 7, 8, 9, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="not a run id"):
        run_time("2026-13-01-00-00-00")


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_every_kind_encodes_and_decodes(kind):
    lines = [b"a\tb", b"c\td", b"e\tf", b"g\th"]
    data = encode_object(kind, lines)
    is_gzip = kind not in ("plain", "csv")
    assert (data[:2] == b"\x1f\x8b") is is_gzip
    members = gunzip_members(data) if is_gzip else [data]
    assert len(members) == (3 if kind == "multigz" else 1)
    assert b"".join(members) == b"a\tb\nc\td\ne\tf\ng\th\n"
    if is_gzip:
        assert gzip.decompress(data) == b"".join(members)  # what any gzip reader sees
    crlf = decode(encode_object(kind, lines, crlf=True, final_newline=False))
    assert crlf == b"a\tb\r\nc\td\r\ne\tf\r\ng\th"


def test_object_names_match_kinds():
    rng = random.Random(1)
    for kind in FILE_KINDS:
        name = object_name(kind, 7, rng, datetime(2019, 5, 21, 3))
        assert re.fullmatch(NAME_PATTERNS[kind], name), (kind, name)
    assert object_name("s3loader", 0, rng, datetime(2019, 5, 21)).startswith("2019-05-21-4959")
    with pytest.raises(ValueError, match="unknown file kind"):
        object_name("lzo", 0, rng)


def read_local_archive(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def check_against_truth(files: dict, truth: ArchiveTruth) -> None:
    """Every written object and line is what `truth` says, by independent decoding and classification."""
    assert set(files) == {o.key for o in truth.objects}
    kinds_seen = set()
    earlier_keys: set = set()
    for rt in truth.runs:
        data_objects = [o for o in truth.objects if o.key in rt.objects]
        assert [o.key for o in data_objects] == rt.objects
        outcomes, events, malformed_at, crlf_objects = Counter(), [], [], 0
        for o in data_objects:
            raw = files[o.key]
            assert len(raw) == o.bytes > 0
            name = o.key.split("/", 1)[1]
            if o.lines:
                assert re.fullmatch(NAME_PATTERNS[o.kind], name), (o.kind, name)
                kinds_seen.add(o.kind)
            if o.members:
                assert len(gunzip_members(raw)) == o.members
            text = decode(raw)
            assert (b"\r\n" in text) is o.crlf
            crlf_objects += o.crlf
            assert text.endswith(b"\n") is (o.final_newline and o.lines > 0)
            lines = split_lines(text)
            assert len(lines) == o.lines
            for number, line in enumerate(lines, 1):
                outcome, event = classify(line)
                outcomes[outcome] += 1
                if event:
                    events.append(event)
                elif outcome != "no_fingerprint":
                    malformed_at.append((o.key, number, outcome))
        assert sum(outcomes.values()) == rt.lines
        assert {r: outcomes[r] for r in rt.malformed} == rt.malformed and malformed_at == rt.malformed_at
        assert outcomes["no_fingerprint"] == rt.no_fingerprint
        assert sorted(events) == sorted(rt.events)
        keys = [(e, f) for e, f, _ in events]
        assert len(keys) - len(set(keys)) == rt.in_run_duplicates
        assert len(set(keys) & earlier_keys) == rt.cross_run_duplicates
        ids = Counter(e for e, _ in set(keys) - earlier_keys)
        assert sum(n - 1 for n in ids.values()) == rt.same_id_other_fingerprint
        etls = {ms for _, _, ms in events}
        assert (len(etls) > 1) is rt.stream
        if not rt.stream:
            start = int(run_time(rt.run).timestamp() * 1000)
            assert start <= rt.etl_ms < start + 1000
        if len(rt.objects) > 3:
            assert crlf_objects == 1 and sum(not o.final_newline for o in data_objects) == 1
        earlier_keys |= set(keys)
    markers = [o for o in truth.objects if not o.is_data]
    assert markers and all(files[o.key] == b"" for o in markers)
    assert {o.key.rsplit("/", 1)[-1] for o in markers} >= {"_SUCCESS"}
    assert any(o.key.endswith("_$folder$") for o in markers)


def test_generate_archive_locally_matches_its_truth(tmp_path):
    truth = generate_archive(str(tmp_path), RUNS, 300, malformed_fraction=0.03, no_fingerprint_fraction=0.02,
                             duplicate_fraction=0.04, cross_run_duplicates=0.03, stream_enrich_runs=1, seed=11)
    check_against_truth(read_local_archive(tmp_path), truth)
    assert [r.run for r in truth.runs] == RUNS and [r.stream for r in truth.runs] == [False] * 3 + [True]
    first, later = truth.runs[0], truth.runs[1]
    assert first.malformed == {"field_count": 3, "event_id": 3, "etl_tstamp": 3} and first.no_fingerprint == 6
    assert (first.in_run_duplicates, first.cross_run_duplicates, later.cross_run_duplicates) == (12, 0, 9)
    assert all(r.lines == 300 and r.invalid_utf8 >= 2 for r in truth.runs)
    assert {o.kind for o in truth.objects if o.lines} == set(FILE_KINDS)
    # A key seen in several runs keeps the earliest run's etlTime.
    expected = truth.expected_manifest()
    assert len(expected) == len(set().union(*(r.unique_keys for r in truth.runs)))
    for key in first.unique_keys:
        assert expected[key] == first.etl_ms // 1000


def test_generate_archive_is_deterministic_by_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in ((a, 4), (b, 4), (c, 5)):
        generate_archive(str(root), RUNS[:2], 60, malformed_fraction=0.05, stream_enrich_runs=1, seed=seed)
    assert read_local_archive(a) == read_local_archive(b)
    assert read_local_archive(a) != read_local_archive(c)


def test_fewer_objects_rotate_kinds_and_bad_arguments(tmp_path):
    truth = generate_archive(str(tmp_path), RUNS, 20, objects_per_run=2, extras=False, malformed_fraction=0.05,
                             seed=2)
    per_run = [[o.kind for o in truth.objects if o.key in r.objects] for r in truth.runs]
    assert all(len(kinds) == 2 for kinds in per_run) and len({tuple(k) for k in per_run}) > 1
    assert all(o.is_data for o in truth.objects)
    # One bad line per run, yet every reason appears across the runs.
    assert [sum(r.malformed.values()) for r in truth.runs] == [1, 1, 1, 1]
    assert all(sum(r.malformed[reason] for r in truth.runs) for reason in truth.runs[0].malformed)
    with pytest.raises(ValueError, match="unknown file kinds"):
        generate_archive(str(tmp_path / "x"), RUNS, 10, kinds=("zip",))
    with pytest.raises(ValueError, match="cannot hold"):
        generate_archive(str(tmp_path / "y"), RUNS, 10, malformed_fraction=0.9, duplicate_fraction=0.5)


def test_generate_archive_to_s3(moto_reset):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="acme-snowplow")
    truth = generate_archive("s3://acme-snowplow/enriched/archive", RUNS[:2], 50, malformed_fraction=0.04,
                             stream_enrich_runs=1, seed=3)
    listed = s3.list_objects_v2(Bucket="acme-snowplow", Prefix="enriched/archive/")["Contents"]
    assert {o["Key"]: o["Size"] for o in listed} == {f"enriched/archive/{o.key}": o.bytes for o in truth.objects}
    files = {o.key: s3.get_object(Bucket="acme-snowplow", Key=f"enriched/archive/{o.key}")["Body"].read()
             for o in truth.objects}
    check_against_truth(files, truth)


def test_expected_items_earliest_wins_and_expiry():
    a, b = ("a" * 8 + "-0000-4000-8000-" + "0" * 12, "f" * 32), ("b" * 8 + "-0000-4000-8000-" + "0" * 12, "e" * 32)
    no_bad = {"field_count": 0, "event_id": 0, "etl_tstamp": 0}

    def run(run_id, events, stream=False):
        return RunTruth(run_id, stream, len(events), events, dict(no_bad), [], 0, 0, 0, 0, 0)

    truth = ArchiveTruth("/x", [
        run("2026-05-01-00-00-00", [(*a, 1_000_500)]),
        run("2026-05-02-00-00-00", [(*a, 2_000_000), (*b, 2_500_999), (*b, 2_000_100)], stream=True),
    ], [])
    assert truth.expected_manifest() == {a: 1000, b: 2000}
    assert truth.expected_manifest(etl_time="event") == {a: 1000, b: 2000}
    assert truth.expected_manifest(runs=["2026-05-02-00-00-00"]) == {a: 2000, b: 2000}
    assert truth.expected_items(ttl_days=1) == {a: (1000, 87400), b: (2000, 88400)}
    # The first run's copy of `a` has expired: the later run's copy is the one written.
    assert truth.expected_items(ttl_days=1, now=87400) == {a: (2000, 88400), b: (2000, 88400)}
    assert truth.expected_items(ttl_days=1, now=88400) == {}


@pytest.mark.parametrize("compress", [True, False])
def test_big_object(tmp_path, compress):
    obj = big_object(str(tmp_path / "big"), 2500, gzip=compress, seed=1)
    raw = (tmp_path / "big").read_bytes()
    assert obj.bytes == len(raw) and (raw[:2] == b"\x1f\x8b") is compress
    text = decode(raw)
    assert obj.raw_bytes == len(text) and 1250 <= len(text) / 2500 <= 1400
    lines = split_lines(text)
    outcomes = [classify(line) for line in lines]
    assert len(lines) == 2500 and all(o == "valid" for o, _ in outcomes)
    assert len({e for _, (e, _, _) in outcomes}) == len({f for _, (_, f, _) in outcomes}) == 2500
    if compress:
        assert 3 <= obj.raw_bytes / obj.bytes <= 12  # near real archives' ratio, not a collapse on repeats


def test_cli_demo_and_bad_input(tmp_path, capsys):
    assert main(["--dest", str(tmp_path / "demo"), "--demo", "--start", "2026-11-01-00-00-00"]) == 0
    out = capsys.readouterr().out
    assert "Wrote 5 runs" in out and "s3loader" in out and "stream-enrich" in out
    runs = sorted(p.name for p in (tmp_path / "demo").iterdir() if p.is_dir())
    assert runs == [f"run={r}" for r in run_ids(run_time("2026-11-01-00-00-00"), 5)]
    assert main(["--dest", str(tmp_path / "bad"), "--start", "yesterday"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run id" in err and not (tmp_path / "bad").exists()
