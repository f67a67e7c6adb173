"""Reading archive objects (spark/archive.py): every file kind, local and on a moto S3 server, and bad gzip."""
from __future__ import annotations

import gzip
import io
import random
import zlib

import boto3
import pytest
from botocore.exceptions import ClientError, ResponseStreamingError
from botocore.stub import Stubber

from bench.archive_objects import FILE_KINDS, encode_object, object_name
from bench.event_lines import event_line, new_fingerprint, new_uuid
from spark import archive, refusals
from spark.refusals import watch
from spark.storage import ObjectInfo, list_objects, parse_location


def sample_lines(n: int = 40, seed: int = 1):
    rng = random.Random(seed)
    lines = [event_line(new_uuid(rng), new_fingerprint(rng), "2026-05-01 10:00:00.123", rng=rng) for _ in range(n)]
    lines[-1] = lines[-1] + b"\t\t"  # a line ending in empty fields
    return lines


def read_all(loc, client=None):
    return [line for batch in archive.read_lines(loc, client) for line in batch]


def ended(lines, end=b"\n"):
    """Lines as the reader gives them: each with its ending."""
    return [line + end for line in lines]


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("kind", FILE_KINDS)
def test_every_file_kind_reads_back_its_lines_locally(tmp_path, kind, crlf):
    lines = sample_lines()
    name = object_name(kind, 0, random.Random(2))
    (tmp_path / name).write_bytes(encode_object(kind, lines, crlf=crlf))
    assert read_all(parse_location(str(tmp_path / name))) == ended(lines, b"\r\n" if crlf else b"\n")


def test_gzip_without_extension_and_plain_text_named_gz(tmp_path):
    lines = sample_lines(10)
    (tmp_path / "part-00000").write_bytes(encode_object("gz", lines))
    (tmp_path / "part-00001.gz").write_bytes(encode_object("plain", lines))
    (tmp_path / "part-00002.gzip").write_bytes(encode_object("plain", lines))
    for name in ("part-00000", "part-00001.gz", "part-00002.gzip"):
        assert read_all(parse_location(str(tmp_path / name))) == ended(lines)


def test_multi_member_gzip_with_zero_padding_and_an_empty_member(tmp_path):
    lines = sample_lines(9)
    data = (gzip.compress(b"\n".join(lines[:4]) + b"\n") + b"\0" * 7 + gzip.compress(b"")
            + gzip.compress(b"\n".join(lines[4:]) + b"\n") + b"\0" * 3)
    (tmp_path / "multi.gz").write_bytes(data)
    assert read_all(parse_location(str(tmp_path / "multi.gz"))) == ended(lines)


class CountingInflater:
    """zlib.decompressobj(31) whose decompress calls are counted and capped, so a reader that would inflate for ever
    fails the test instead of hanging it."""

    def __init__(self, inflater, calls: list, cap: int):
        self._d, self._calls, self._cap = inflater, calls, cap

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        self._calls.append(len(data))
        if len(self._calls) > self._cap:
            raise AssertionError(f"{len(self._calls)} inflate calls: the reader does not stop")
        return self._d.decompress(data, max_length)

    def __getattr__(self, name):  # eof, unused_data, unconsumed_tail
        return getattr(self._d, name)


def test_a_member_ending_while_its_unconsumed_input_is_inflated(monkeypatch):
    """A member that inflates to more than one block ends in a call fed from its unconsumed input, with the next
    member in the same read. CPython then keeps the leftover in unconsumed_tail as well as in unused_data: the
    reader must start the next member from unused_data, not inflate the tail again (it did, for ever, on the
    end-to-end benchmark's 10,000-event runs)."""
    rng = random.Random(5)
    first = b"".join(event_line(new_uuid(rng), new_fingerprint(rng), "2026-12-05 09:00:00.000", rng=rng) + b"\n"
                     for _ in range(400))
    second = b"the second member\n"
    data = gzip.compress(first) + gzip.compress(second)
    assert len(first) > archive.MAX_BLOCK  # inflated in more than one call; both members in one chunk below
    calls: list = []
    real = zlib.decompressobj
    monkeypatch.setattr(zlib, "decompressobj", lambda wbits: CountingInflater(real(wbits), calls, 50))
    assert b"".join(archive.gunzip([data], "obj")) == first + second
    assert len(calls) <= 2 + len(first) // archive.MAX_BLOCK + 2


@pytest.mark.parametrize("gzipped", [False, True])
def test_chunk_boundaries_anywhere(gzipped):
    """One byte per chunk: lines, CRLF pairs, gzip headers and members all split across chunks."""
    lines = [b"a\tb", b"", b"c", b"d\te\t"]
    raw = b"\r\n".join(lines) + b"\r\n" + b"last\r"
    data = gzip.compress(raw[:7]) + gzip.compress(raw[7:]) if gzipped else raw
    chunks = [data[i:i + 1] for i in range(len(data))]
    got = [x for batch in archive.decode_stream(chunks, "obj") for x in batch]
    assert got == ended(lines, b"\r\n") + [b"last\r"]  # a lone \r is no line end


def test_final_line_without_newline_counts_and_empty_objects_have_none():
    assert [x for b in archive.decode_stream([b"a\nb"], "o") for x in b] == [b"a\n", b"b"]
    assert [x for b in archive.decode_stream([b"a", b"b", b"\n\nc\n"], "o") for x in b] == [b"ab\n", b"\n", b"c\n"]
    assert list(archive.decode_stream([], "o")) == []
    assert list(archive.decode_stream([gzip.compress(b"")], "o")) == []


def test_data_objects_skip_markers_and_empty_objects():
    infos = [ObjectInfo("_SUCCESS", 0), ObjectInfo("_SUCCESS", 12), ObjectInfo("part-00000_$folder$", 0),
             ObjectInfo("sub_$folder$", 3), ObjectInfo("part-00001", 0), ObjectInfo("part-00002", 5),
             ObjectInfo("part-00003.gz", 20, "GLACIER"), ObjectInfo("nested/_SUCCESS", 4),
             ObjectInfo("2019-05-21-4959-4960.gz", 9)]
    assert [o.name for o in archive.data_objects(infos)] == ["part-00002", "part-00003.gz",
                                                              "2019-05-21-4959-4960.gz"]


def test_corrupt_gzip_names_the_object(tmp_path):
    data = bytearray(encode_object("gz", sample_lines(30)))
    for i in range(40, 60):
        data[i] ^= 0x5A
    (tmp_path / "part-00007.gz").write_bytes(bytes(data))
    with pytest.raises(archive.ArchiveReadError, match=r"part-00007\.gz: corrupt gzip data") as e:
        read_all(parse_location(str(tmp_path / "part-00007.gz")))
    assert "\n" not in str(e.value)


def test_truncated_gzip_names_the_object(tmp_path):
    data = encode_object("gz", sample_lines(30))
    (tmp_path / "part-00008.gz").write_bytes(data[:-200])
    with pytest.raises(archive.ArchiveReadError, match=r"part-00008\.gz: truncated gzip data"):
        read_all(parse_location(str(tmp_path / "part-00008.gz")))


def test_garbage_after_a_gzip_member_is_an_error(tmp_path):
    (tmp_path / "x.gz").write_bytes(encode_object("gz", sample_lines(3)) + b"not gzip")
    with pytest.raises(archive.ArchiveReadError, match=r"x\.gz: corrupt gzip data"):
        read_all(parse_location(str(tmp_path / "x.gz")))


def test_missing_local_object_is_a_one_line_error(tmp_path):
    with pytest.raises(archive.ArchiveReadError, match=r"gone\.gz: cannot read: FileNotFoundError"):
        read_all(parse_location(str(tmp_path / "gone.gz")))


# --- S3, on the moto server ---------------------------------------------------------------------------------

@pytest.fixture
def bucket(moto_reset):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="archive")
    return s3


def test_every_file_kind_reads_back_from_s3(bucket):
    lines = sample_lines(25)
    rng = random.Random(3)
    names = []
    for i, kind in enumerate(FILE_KINDS):
        names.append(object_name(kind, i, rng))
        bucket.put_object(Bucket="archive", Key=f"enriched/run=2026-05-01-10-00-00/{names[-1]}",
                          Body=encode_object(kind, lines, crlf=i % 2 == 1))
    folder = parse_location("s3://archive/enriched/run=2026-05-01-10-00-00")
    listed = archive.data_objects(list_objects(folder, bucket))
    assert sorted(o.name for o in listed) == sorted(names)
    for i, o in enumerate(sorted(listed, key=lambda o: names.index(o.name))):
        assert read_all(folder.child(o.name), bucket) == ended(lines, b"\r\n" if i % 2 else b"\n")


def test_missing_s3_object_is_a_one_line_error(bucket):
    with pytest.raises(archive.ArchiveReadError, match=r"s3://archive/nope\.gz: cannot read: .*NoSuchKey"):
        read_all(parse_location("s3://archive/nope.gz"), bucket)


def test_archived_objects_unless_restored(bucket):
    for key, cls in (("a.gz", "GLACIER"), ("b.gz", "DEEP_ARCHIVE"), ("c.gz", "GLACIER_IR"), ("d.gz", "STANDARD"),
                     ("e.gz", "GLACIER")):
        bucket.put_object(Bucket="archive", Key=f"run=x/{key}", Body=b"data", StorageClass=cls)
    bucket.restore_object(Bucket="archive", Key="run=x/e.gz", RestoreRequest={"Days": 1})
    folder = parse_location("s3://archive/run=x")
    assert archive.archived_objects(folder, list_objects(folder, bucket), bucket) == ["a.gz", "b.gz"]


class _DroppingClient:
    """Serves one object but drops the connection after `drop_after` bytes of each of the first two downloads."""

    def __init__(self, data: bytes, drop_after: int):
        self.data, self.drop_after, self.calls = data, drop_after, []

    def get_object(self, Bucket, Key, Range=None, IfMatch=None):
        self.calls.append((Range, IfMatch))
        start = int(Range[len("bytes="):-1]) if Range else 0
        body = self.data[start:]
        drops = len(self.calls) <= 2

        class Body:
            def __init__(self):
                self.stream, self.sent = io.BytesIO(body), 0

            def read(self, n):
                if drops and self.sent >= 5:
                    raise ResponseStreamingError(error="connection reset")
                chunk = self.stream.read(min(n, 5) if drops else n)
                self.sent += len(chunk)
                return chunk

            def close(self):
                pass

        return {"ETag": '"v1"', "ContentLength": len(body), "Body": Body()}


def test_dropped_s3_download_resumes_from_where_it_stopped():
    data = encode_object("gz", sample_lines(5))
    client = _DroppingClient(data, 5)
    chunks = list(archive.iter_chunks(parse_location("s3://archive/run=x/a.gz"), client, chunk_size=1 << 16))
    assert b"".join(chunks) == data
    assert client.calls == [(None, None), ("bytes=5-", '"v1"'), ("bytes=10-", '"v1"')]


def test_a_download_dropped_after_its_last_byte_is_complete():
    client = _DroppingClient(b"abcde", 5)
    assert b"".join(archive.iter_chunks(parse_location("s3://archive/x"), client)) == b"abcde"
    assert len(client.calls) == 1


def test_an_object_aws_refuses_is_its_refusal_not_an_unreadable_object():
    """AccessDenied on an archive object is told as AWS's refusal (who, which IAM action), like every other."""
    client = watch(boto3.client("s3", region_name="us-east-1"), refusals.DEFAULT_CHAIN)
    with Stubber(client) as stub:
        stub.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
        with pytest.raises(ClientError) as refused:
            read_all(parse_location("s3://archive/enriched/run=2026-05-01-10-00-00/a.gz"), client)
    assert refusals.refusal(refused.value).line().startswith(
        "AWS denied s3:GetObject on s3://archive/enriched/run=2026-05-01-10-00-00/a.gz to the default AWS credential "
        "chain")
