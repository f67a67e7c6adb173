"""Which objects of a run folder hold events, and their lines, streamed from local disk or S3.

Compression is told by the gzip magic bytes, never by a name: archives hold gzip named `.gz`, `.gzip`,
`.csv.gz` and S3 Loader names, and plain text in all of them too. Gzip is inflated in chunks with zlib directly
(about twice as fast as iterating a GzipFile's lines) and may hold several members, as S3DistCp --groupBy writes.
"""
from __future__ import annotations

import io
import itertools
import zlib
from typing import Iterable, Iterator, List, Optional

from botocore.exceptions import ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError

from spark.errors import error_line
from spark.refusals import refusal
from spark.storage import Location, ObjectInfo, s3_client

UNREADABLE_STORAGE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")  # GLACIER_IR is read like STANDARD
GZIP_MAGIC = b"\x1f\x8b"
# Blocks small enough to stay in a core's cache from inflating to splitting to scanning their lines, and reads that
# never inflate into multi-MB buffers (their page faults alone cost more than the parse): 1 MB reads and 4 MB blocks
# took 0.47 s of CPU per 100,000 gzip lines here, 64 KB and 256 KB 0.41 (medians of 7 paired rounds). A read
# inflates to about 400 KB at archives' 6.5x.
READ_CHUNK = 64 << 10  # compressed or plain bytes per read
MAX_BLOCK = 256 << 10  # inflated bytes per zlib call, bounding memory whatever the compression ratio
MAX_RESUMES = 5  # times one S3 download continues after a dropped connection


class ArchiveReadError(Exception):
    """An object that cannot be read whole; the message is one line naming the object."""


def is_data_object(info: ObjectInfo) -> bool:
    """Everything is data except `_SUCCESS`, `*_$folder$` markers and zero-byte objects."""
    base = info.name.rsplit("/", 1)[-1]
    return info.size > 0 and base != "_SUCCESS" and not info.name.endswith("_$folder$")


def data_objects(infos: Iterable[ObjectInfo]) -> List[ObjectInfo]:
    return [info for info in infos if is_data_object(info)]


def archived_objects(folder: Location, infos: Iterable[ObjectInfo], client=None) -> List[str]:
    """Names of the objects in GLACIER or DEEP_ARCHIVE that are not restored, so cannot be read."""
    names = []
    for info in infos:
        if info.storage_class not in UNREADABLE_STORAGE_CLASSES:
            continue
        client = client or s3_client()
        loc = folder.child(info.name)
        restore = client.head_object(Bucket=loc.bucket, Key=loc.key).get("Restore") or ""
        if 'ongoing-request="false"' not in restore:
            names.append(info.name)
    return names


def iter_chunks(loc: Location, client=None, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
    """The raw bytes of one object in chunks; an S3 download that drops continues where it stopped."""
    if not loc.is_s3:
        with open(loc.key, "rb") as f:
            while True:
                chunk = f.read(chunk_size)
                if not chunk:
                    return
                yield chunk

    client = client or s3_client()
    offset = 0
    resumes = 0
    etag = size = None
    while size is None or offset < size:
        extra = {"Range": f"bytes={offset}-", "IfMatch": etag} if offset else {}
        response = client.get_object(Bucket=loc.bucket, Key=loc.key, **extra)
        if etag is None:
            etag, size = response.get("ETag"), response.get("ContentLength")
        body = response["Body"]
        try:
            while True:
                chunk = body.read(chunk_size)
                if not chunk:
                    return
                offset += len(chunk)
                yield chunk
        except (ResponseStreamingError, ReadTimeoutError, IncompleteReadError, ConnectionClosedError):
            resumes += 1
            if resumes > MAX_RESUMES or not etag:
                raise
        finally:
            body.close()


def gunzip(chunks: Iterable[bytes], name: str) -> Iterator[bytes]:
    """Inflate a gzip stream of one or more members (zero padding between members is skipped)."""
    d = zlib.decompressobj(31)
    fed = False
    try:
        for data in chunks:
            while data:
                if not fed:
                    data = data.lstrip(b"\x00")
                    if not data:
                        break
                    fed = True
                out = d.decompress(data, MAX_BLOCK)
                if out:
                    yield out
                # Never again once the member has ended: CPython then keeps the leftover in unconsumed_tail as well
                # as in unused_data, and inflating it again yields nothing for ever.
                while not d.eof and (d.unconsumed_tail or len(out) == MAX_BLOCK):
                    out = d.decompress(d.unconsumed_tail, MAX_BLOCK)
                    if out:
                        yield out
                if d.eof:
                    data = d.unused_data
                    d = zlib.decompressobj(31)
                    fed = False
                else:
                    data = b""
    except zlib.error as e:
        raise ArchiveReadError(f"{name}: corrupt gzip data ({e})") from None
    if fed:
        raise ArchiveReadError(f"{name}: truncated gzip data (the object ends inside a gzip member)")


def split_lines(blocks: Iterable[bytes]) -> Iterator[List[bytes]]:
    r"""Lists of lines as a binary file iterates them: each ends in its '\n' (or '\r\n'), the last maybe in none.

    BytesIO finds line ends with memchr, about three times faster than bytes.split(b"\n"), and the job has no
    use for stripped lines (see spark.events), so lines keep their endings.
    """
    carry: List[bytes] = []  # the start of a line not ended yet, in pieces: joined once, however many blocks it spans
    for block in blocks:
        first = None
        bio = io.BytesIO(block)  # shares the block's memory: no copy
        if carry:
            end = block.find(b"\n")
            if end < 0:
                carry.append(block)
                continue
            first = b"".join(carry) + block[:end + 1]
            bio.seek(end + 1)
        lines = bio.readlines()
        if first is not None:
            lines.insert(0, first)
        carry = [lines.pop()] if lines and not lines[-1].endswith(b"\n") else []
        if lines:
            yield lines
    if carry:
        yield [b"".join(carry)]


def decode_stream(chunks: Iterable[bytes], name: str) -> Iterator[List[bytes]]:
    """Line batches of an object's raw bytes, inflating them when they start with the gzip magic."""
    chunks = iter(chunks)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= len(GZIP_MAGIC):
            break
    if not head:
        return
    stream = itertools.chain([head], chunks)
    yield from split_lines(gunzip(stream, name) if head.startswith(GZIP_MAGIC) else stream)


def read_lines(loc: Location, client=None, name: Optional[str] = None) -> Iterator[List[bytes]]:
    """Line batches of one object (lines keep their endings); any failure is an ArchiveReadError naming it."""
    name = name or loc.uri
    try:
        yield from decode_stream(iter_chunks(loc, client), name)
    except ArchiveReadError:
        raise
    except Exception as e:  # noqa: BLE001 - S3 and OS errors alike become one line naming the object
        if refusal(e) is not None:
            raise  # AWS said no: the caller tells it as a refusal (who, which IAM action, what), not as this object's
        raise ArchiveReadError(f"{name}: cannot read: {error_line(e)}") from None
