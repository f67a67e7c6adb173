"""Numbers, sizes, durations, prices and tables as an operator reads them, on the console and in luigid."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

MAX_ROWS = 40  # runs, batches or skipped folders listed on the console; the JSON holds them all

def count(n: float) -> str:
    return f"{n:,.0f}"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000.0
    raise AssertionError("unreachable")


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "not estimated"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 48 * 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def usd(amount: Optional[float]) -> str:
    if amount is None:
        return "unknown price"
    if 0 < amount < 0.005:
        return "<$0.01"
    return f"${amount:,.2f}"


def grid(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    """Left-aligned first column, right-aligned others."""
    cells = [list(header)] + [list(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    return ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))).rstrip()
            for c in cells]


def shortened(lines: List[str], what: str) -> List[str]:
    if len(lines) <= MAX_ROWS:
        return lines
    half = MAX_ROWS // 2
    return lines[:half] + [f"  ... {len(lines) - 2 * half} more {what} (all in --output-json)"] + lines[-half:]


def table_with_total(header: Sequence[str], rows: List[Sequence[str]], total: Sequence[str], what: str
                      ) -> List[str]:
    table = grid(header, rows + [total])
    return [table[0]] + shortened(table[1:-1], what) + [table[-1]]


def span(ids: Sequence[str]) -> str:
    return "" if not ids else f" ({ids[0]})" if len(ids) == 1 else f" ({ids[0]} .. {ids[-1]})"
