"""Where a gzip line's CPU goes: each step of the job's read-and-parse path alone, per line, beside bare zlib's.

`bench.extract` measures the whole path against bare zlib; this says what each CPython primitive of it costs on
the same kind of line, so a reader can see how far any rewrite in Python could go. Every step runs over the same
in-memory lines (no I/O), `--rounds` times each, interleaved; the figure is the median CPU time per line.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import zlib
from collections import deque
from itertools import repeat
from operator import methodcaller
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from bench.event_lines import event_line, format_tstamp, new_fingerprint, new_uuid
from bench.extract import CHUNK, inflate_all
from spark.archive import split_lines
from spark.events import LineTally, scan_lines

IDENTITY = bytes(range(256))  # a translate table: its cost does not depend on what it maps to


def make_lines(count: int, size: int, seed: int = 1) -> List[bytes]:
    """Realistic enriched lines with their '\\n', one batch run's etl_tstamp, as an archive's object holds them."""
    rng = random.Random(seed)
    etl = format_tstamp(1_700_000_000_123)
    return [event_line(new_uuid(rng), new_fingerprint(rng), etl, rng=rng, size=size) + b"\n" for _ in range(count)]


def drain(results: Iterable) -> None:
    """Consume without keeping: each result is freed before the next, as in the parse's loop."""
    deque(results, maxlen=0)


def steps(lines: List[bytes]) -> List[Tuple[str, Callable[[], object]]]:
    """(what, run it over every line) for each step, the first being the reference."""
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    data = gz.compress(b"".join(lines)) + gz.flush()
    blocks = [b"".join(lines[i:i + 200]) for i in range(0, len(lines), 200)]  # ~256 KB, as the reader inflates
    ids = [line.split(b"\t", 7)[6] for line in lines]
    fingerprints = [line.rsplit(b"\t", 2)[1] for line in lines]
    return [
        ("bare zlib inflate (the reference)",
         lambda: inflate_all(data[i:i + CHUNK] for i in range(0, len(data), CHUNK))),
        ("split into lines (spark.archive.split_lines)", lambda: sum(map(len, split_lines(blocks)))),
        ("the whole parse (spark.events.scan_lines)", lambda: sum(1 for _ in scan_lines([lines], "x", LineTally()))),
        ("count the tabs: line.count(b'\\t')", lambda: drain(map(bytes.count, lines, repeat(b"\t")))),
        ("the head fields: line.split(b'\\t', 7)", lambda: drain(map(methodcaller("split", b"\t", 7), lines))),
        ("the tail fields: line.rsplit(b'\\t', 2)", lambda: drain(map(methodcaller("rsplit", b"\t", 2), lines))),
        ("the event id's shape: bytes.translate", lambda: drain(map(bytes.translate, ids, repeat(IDENTITY)))),
        ("decode the event id (ascii)", lambda: drain(map(methodcaller("decode", "ascii"), ids))),
        ("decode the fingerprint (utf-8, replace)",
         lambda: drain(map(methodcaller("decode", "utf-8", "replace"), fingerprints))),
        ("a pass over the lines doing nothing", lambda: drain(lines)),
    ]


def measure(lines: List[bytes], rounds: int) -> Dict[str, float]:
    """Median CPU microseconds per line of each step, the steps interleaved round by round."""
    todo = steps(lines)
    cpu: Dict[str, List[float]] = {name: [] for name, _ in todo}
    for _ in range(rounds):
        for name, fn in todo:
            t0 = time.process_time()
            fn()
            cpu[name].append(time.process_time() - t0)
    return {name: statistics.median(times) / len(lines) * 1e6 for name, times in cpu.items()}


def table(per_line: Dict[str, float]) -> str:
    reference = next(iter(per_line.values()))
    rows = ["| step | µs per line | ÷ bare zlib's |", "|---|---:|---:|"]
    rows += [f"| {name} | {us:.3f} | {us / reference:.2f} |" for name, us in per_line.items()]
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scan_costs", description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=20_000, help="lines generated (default 20,000)")
    p.add_argument("--rounds", type=int, default=9, help="rounds, each running every step once (default 9)")
    p.add_argument("--size", type=int, default=1300, help="bytes per line (default 1,300)")
    a = p.parse_args(argv)
    if a.lines < 1 or a.rounds < 1:
        p.error("--lines and --rounds must be positive")
    lines = make_lines(a.lines, a.size)
    print(f"{a.lines:,} lines of {sum(map(len, lines)) / a.lines:,.0f} B, median of {a.rounds} rounds",
          file=sys.stderr)
    print(table(measure(lines, a.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
