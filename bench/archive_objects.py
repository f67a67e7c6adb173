"""Archive objects: the name and bytes each writer of enriched archives gave a file kind, and large single
objects for the extraction benchmark."""
from __future__ import annotations

import gzip as gzip_mod
import os
import random
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import List, Optional, Sequence

from bench.event_lines import FINGERPRINT, IDX, event_line, format_tstamp, new_fingerprint, new_uuid, utc

FILE_KINDS = ("plain", "gz", "gzip", "csv", "csv.gz", "multigz", "s3loader")
GZIP_KINDS = frozenset({"gz", "gzip", "csv.gz", "multigz", "s3loader"})
MULTIGZ_MEMBERS = 3


def object_name(kind: str, index: int, rng: random.Random, when: Optional[datetime] = None) -> str:
    """The object name each writer of enriched archives used for the kind."""
    if kind == "plain":
        return f"part-{index:05d}"
    if kind in ("gz", "multigz"):
        return f"part-{index:05d}.gz"
    if kind == "gzip":
        return f"part-{index:05d}.gzip"
    if kind in ("csv", "csv.gz"):
        return f"part-{index:05d}-{new_uuid(rng)}.{kind}"
    if kind == "s3loader":
        day = utc(when or datetime(2019, 5, 21)).strftime("%Y-%m-%d")
        first = 49590338271490256608559692538361571095921575989136588898 + rng.getrandbits(150) + index * 10**40
        last = first + rng.getrandbits(92)
        return f"{day}-{first}-{last}.gz"
    raise ValueError(f"unknown file kind {kind!r} (one of {', '.join(FILE_KINDS)})")


def encode_object(kind: str, lines: Sequence[bytes], *, crlf: bool = False, final_newline: bool = True,
                  level: int = 6) -> bytes:
    """Object bytes for the kind: lines ended by \\n (or \\r\\n), gzipped where the kind is, multigz in 3 members."""
    if kind not in FILE_KINDS:
        raise ValueError(f"unknown file kind {kind!r} (one of {', '.join(FILE_KINDS)})")
    end = b"\r\n" if crlf else b"\n"
    chunks = split_evenly(list(lines), MULTIGZ_MEMBERS) if kind == "multigz" else [list(lines)]
    texts = [b"".join(line + end for line in chunk) for chunk in chunks]
    if not final_newline and lines:
        last = max(i for i, chunk in enumerate(chunks) if chunk)
        texts[last] = texts[last][:-len(end)]
    if kind not in GZIP_KINDS:
        return texts[0]
    return b"".join(gzip_mod.compress(text, compresslevel=level, mtime=0) for text in texts)


def split_evenly(items: list, parts: int) -> List[list]:
    """`parts` contiguous chunks whose sizes differ by at most one (empty chunks when items are few)."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + q + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out


# --- large single objects for the extraction benchmark -------------------------------------------------------

@dataclass
class BigObject:
    path: str
    events: int
    bytes: int  # as stored
    raw_bytes: int  # uncompressed


def big_object(path: str, n_events: int, *, gzip: bool, seed: int = 0, size: int = 1300, level: int = 6,
               templates: int = 64) -> BigObject:
    """A local file of `n_events` valid lines, fast: a few rendered lines with fresh ids spliced in per line.

    Ids (event_id, network_userid, domain_sessionid, fingerprint) vary on every line so gzip's ratio stays near
    that of real archives instead of collapsing on repeated lines.
    """
    rng = random.Random(seed)
    etl = format_tstamp(1_777_593_600_000 + rng.randrange(1000))
    variable = (IDX["event_id"], IDX["network_userid"], IDX["domain_sessionid"], FINGERPRINT)
    segments = []
    for _ in range(templates):
        f = event_line(new_uuid(rng), new_fingerprint(rng), etl, rng=rng, size=size).split(b"\t")
        cuts = [-1, *variable, len(f)]
        segments.append([b"\t".join(f[a + 1:b]) for a, b in zip(cuts, cuts[1:])])
    raw = stored = 0
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31) if gzip else None
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as out:
        done = 0
        while done < n_events:
            batch = min(20_000, n_events - done)
            hexes = rng.randbytes(batch * 16 * 4).hex()
            buf = []
            for i in range(batch):
                h = hexes[i * 128:(i + 1) * 128]
                s = segments[i % templates]
                ids = (_dashed(h[:32]), _dashed(h[32:64]), _dashed(h[64:96]), h[96:128])
                buf.append(b"".join((s[0], b"\t", ids[0].encode(), b"\t", s[1], b"\t", ids[1].encode(), b"\t",
                                     s[2], b"\t", ids[2].encode(), b"\t", s[3], b"\t", ids[3].encode(), b"\t",
                                     s[4], b"\n")))
            chunk = b"".join(buf)
            raw += len(chunk)
            data = compressor.compress(chunk) if compressor else chunk
            out.write(data)
            stored += len(data)
            done += batch
        if compressor:
            tail = compressor.flush()
            out.write(tail)
            stored += len(tail)
    return BigObject(path, n_events, stored, raw)


def _dashed(h: str) -> str:
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
