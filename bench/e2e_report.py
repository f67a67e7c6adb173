"""The end-to-end benchmark's results and their Markdown: one table per measure, sizes side by side, and the
issue's targets with PASS/FAIL."""
from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence, Tuple

from bench import procmem
from bench.procmem import ROLES
from bench.s3_requests import BOOKKEEPING, KINDS, bookkeeping

PASSES = ("default", "re-run", "many batches", "one batch", "one batch, markers lost")
FRESH = ("default", "many batches", "one batch")  # the passes into a fresh table


@dataclass(frozen=True)
class Size:
    runs: int
    events: int

    @classmethod
    def parse(cls, text: str) -> Size:
        try:
            runs, events = (int(x.replace(",", "").replace("_", "")) for x in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not RUNSxEVENTS (e.g. 100x2000)") from None
        if runs < 1 or events < 100:
            raise argparse.ArgumentTypeError(f"{text!r}: at least 1 run of 100 events")
        return cls(runs, events)

    @property
    def label(self) -> str:
        return f"{self.runs:,} × {self.events:,}"


@dataclass
class PassResult:
    name: str
    code: int
    wall: float  # seconds, the command's start to its exit
    wcu: int  # consumed, as the stand-in counted it
    items: int  # in the table after the command
    first_write_at: Optional[float]
    last_write_at: Optional[float]
    idle_seconds: int  # whole seconds without a write between the first and the last
    throttled_requests: int
    budget: float
    peaks: procmem.Peaks
    s3: Dict[str, int]
    planning_s: Optional[float]
    marking_s: float
    marked_batches: int
    started: float
    batches: List[int] = field(default_factory=list)  # runs per batch, from the markers (fresh passes)
    log: str = ""

    @property
    def write_span(self) -> float:
        return (self.last_write_at - self.first_write_at) if self.first_write_at is not None else 0.0

    @property
    def budget_use(self) -> Optional[float]:
        return budget_use(self.wcu, self.budget, self.first_write_at, self.last_write_at)

    @property
    def to_first_write(self) -> Optional[float]:
        return None if self.first_write_at is None else self.first_write_at - self.started


@dataclass
class SizeResult:
    size: Size
    unique: int  # items a correct backfill leaves in the table
    cross_copies: int  # lines repeating a key first written by an earlier run
    archive_mb: float
    generate_s: float
    passes: Dict[str, PassResult] = field(default_factory=dict)
    cross_other: Dict[str, int] = field(default_factory=dict)  # pass -> copies in another batch than the first


def budget_use(wcu: float, budget: float, first: Optional[float], last: Optional[float]) -> Optional[float]:
    """Share of the budget used over the whole backfill: WCU consumed / (budget x seconds from first to last write).

    Gaps between batches fall inside the window and count against it; the stand-in's one-second burst at the start
    can put a very short backfill above 1.
    """
    if first is None or last is None or last <= first or budget <= 0:
        return None
    return wcu / (budget * (last - first))


def idle_seconds(per_second: Sequence[int]) -> int:
    """Whole seconds without a write between the first and the last second with one."""
    busy = [i for i, n in enumerate(per_second) if n]
    return sum(1 for n in per_second[busy[0]:busy[-1] + 1] if not n) if busy else 0


TARGET_SIZE = Size(100, 2000)  # the speed target is on this archive
SPEED_TARGET, BUDGET_TARGET, WCU_TARGET, FLAT_TARGET, MEMORY_TARGET = 0.8, 0.9, 1.01, 1.25, 1.25

Verdict = Tuple[str, str, Optional[bool]]  # (target, measured, PASS / FAIL / None when not measured)


def speed_ratio(r: SizeResult) -> Optional[float]:
    """The default's speed as a share of one batch's: one batch's wall time / the default's."""
    default, one = r.passes.get("default"), r.passes.get("one batch")
    return one.wall / default.wall if default and one and default.wall else None


def wcu_per_item(p: PassResult, unique: int) -> float:
    return p.wcu / unique if unique else 0.0


def per_run_seconds(p: PassResult, runs: int) -> float:
    return ((p.planning_s or 0.0) + p.marking_s) / runs


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def _s(x: Optional[float], digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _ok(ok: Optional[bool]) -> str:
    return "–" if ok is None else ("PASS" if ok else "FAIL")


def _table(header: Sequence[str], rows: List[Sequence[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _batches(p: PassResult) -> str:
    if not p.batches:
        return str(len(p.peaks.jvms)) if p.peaks.jvms else "–"
    return f"{len(p.batches)} (≤ {max(p.batches)} runs)"


def wall_table(results: List[SizeResult]) -> str:
    rows = []
    for r in results:
        d, o = r.passes["default"], r.passes["one batch"]
        ratio = speed_ratio(r)
        ok = ratio >= SPEED_TARGET if ratio is not None and r.size == TARGET_SIZE else None
        m = r.passes["many batches"]
        rows.append([r.size.label, _s(d.wall), _batches(d), str(len(d.peaks.jvms)), _s(d.to_first_write),
                     _s(o.wall), _s(o.to_first_write), _s(ratio, 2), _ok(ok), _s(m.wall), _batches(m),
                     _s(o.wall / m.wall if m.wall else None, 2)])
    return _table(["runs × events", "default s", "batches", "Spark apps", "to first write s", "one batch s",
                   "one batch to first write s", "speed (one batch s ÷ default s)", "≥ 0.8 on 100 × 2,000",
                   "many batches s", "many batches", "speed of many batches"], rows)


def budget_table(results: List[SizeResult]) -> str:
    rows = []
    for r in results:
        for name in FRESH:
            p = r.passes[name]
            use = p.budget_use
            ok = use >= BUDGET_TARGET if use is not None and name == "default" else None
            rows.append([r.size.label, name, f"{p.wcu:,}", _s(p.write_span), str(p.idle_seconds),
                         str(p.throttled_requests), _s(use, 2), _ok(ok)])
    return _table(["runs × events", "settings", "WCU consumed", "first → last write s", "idle s in between",
                   "throttled requests", "budget use", "≥ 0.9 (default)"], rows, right_from=2)


def wcu_table(results: List[SizeResult]) -> str:
    rows = []
    for r in results:
        p = r.passes
        fresh = max(wcu_per_item(p[name], r.unique) for name in FRESH)
        reruns = p["re-run"].wcu + p["one batch, markers lost"].wcu
        right = all(p[n].items == r.unique for n in PASSES)
        rows.append([r.size.label, f"{r.unique:,}", f"{r.cross_copies:,}", *(spread(r, name) for name in FRESH),
                     *(f"{wcu_per_item(p[name], r.unique):.3f}" for name in FRESH), f"{p['re-run'].wcu:,}",
                     f"{p['one batch, markers lost'].wcu:,}", "yes" if right else "NO",
                     _ok(fresh <= WCU_TARGET), _ok(reruns == 0)])
    return _table(["runs × events", "unique items", "cross-run copies",
                   *(f"in another batch, {name}" for name in FRESH), *(f"WCU/item {name}" for name in FRESH),
                   "re-run WCU", "re-run WCU, markers lost", "table right", "≤ 1.01 fresh", "0 re-run"], rows)


def spread(r: SizeResult, name: str) -> str:
    """The cross-run copies of a pass that landed in another batch than their key's first copy."""
    other = r.cross_other.get(name)
    if other is None or not r.cross_copies:
        return "–"
    return f"{other:,} ({other / r.cross_copies:.0%})"


def memory_table(results: List[SizeResult]) -> str:
    rows = []
    for r in results:
        for name in FRESH:
            p = r.passes[name]
            rows.append([r.size.label, name, *(_mb(p.peaks.by_role[role]) for role in ROLES if role != "other"),
                         _mb(p.peaks.total), _batches(p)])
    return _table(["runs × events", "settings", *(f"{role} MiB" for role in ROLES if role != "other"),
                   "whole tree MiB", "batches"], rows, right_from=2)


def cost_table(results: List[SizeResult]) -> str:
    rows = []
    for r in results:
        d, again = r.passes["default"], r.passes["re-run"]
        n = r.size.runs
        rows.append([r.size.label, *(f"{d.s3[k] / n:.2f}" for k in KINDS), f"{bookkeeping(d.s3) / n:.2f}",
                     f"{bookkeeping(again.s3) / n:.2f}", _s(d.planning_s), _s(d.marking_s) if d.marked_batches else "–",
                     f"{per_run_seconds(d, n):.3f}", _s(again.wall)])
    return _table(["runs × events", *KINDS, "bookkeeping (all but archive reads)", "re-run bookkeeping",
                   "planning s", "marking s", "planning + marking s per run", "re-run s"], rows)


def verdicts(results: List[SizeResult]) -> List[Verdict]:
    out: List[Verdict] = []
    target = next((r for r in results if r.size == TARGET_SIZE), None)
    ratio = speed_ratio(target) if target else None
    out.append((f"default settings ≥ {SPEED_TARGET} of one batch's speed on {TARGET_SIZE.label}",
                _s(ratio, 2), None if ratio is None else ratio >= SPEED_TARGET))
    uses = [(r.size.label, r.passes["default"].budget_use) for r in results]
    measured = [u for _, u in uses if u is not None]
    out.append((f"≥ {BUDGET_TARGET} of the budget used over the whole backfill (default settings, every size)",
                ", ".join(f"{label}: {_s(u, 2)}" for label, u in uses), min(measured) >= BUDGET_TARGET
                if measured else None))
    worst = max((wcu_per_item(r.passes[name], r.unique), r.size.label, name) for r in results
                for name in ("default", "many batches"))
    out.append((f"WCU per unique item ≤ {WCU_TARGET} fresh, with cross-batch duplicates (default settings and "
                "many batches)", f"{worst[0]:.3f} (worst, {worst[1]}, {worst[2]})", worst[0] <= WCU_TARGET))
    reruns = sum(r.passes["re-run"].wcu + r.passes["one batch, markers lost"].wcu for r in results)
    out.append(("0 WCU on a re-run (markers kept, and markers lost)", f"{reruns:,}", reruns == 0))
    if len(results) > 1:
        small, large = min(results, key=lambda r: r.size.runs), max(results, key=lambda r: r.size.runs)
        ds, dl = small.passes["default"], large.passes["default"]
        req = (bookkeeping(dl.s3) / large.size.runs) / max(bookkeeping(ds.s3) / small.size.runs, 1e-9)
        sec = per_run_seconds(dl, large.size.runs) / max(per_run_seconds(ds, small.size.runs), 1e-9)
        span = f"{small.size.runs:,} → {large.size.runs:,} runs"
        out.append((f"S3 requests per run flat ({span}: at most {FLAT_TARGET}×)", f"{req:.2f}×", req <= FLAT_TARGET))
        out.append((f"planning + marking seconds per run flat ({span}: at most {FLAT_TARGET}×)", f"{sec:.2f}×",
                    sec <= FLAT_TARGET))
        mem = dl.peaks.total / max(ds.peaks.total, 1)
        work = (large.size.runs * large.size.events) / (small.size.runs * small.size.events)
        # Judged only when both default batches hold the same events: otherwise the batch grew with the archive
        # and the ratio cannot tell one from the other (the equal-events line below can).
        out.append((f"peak memory bounded by the batch, not the archive (default settings, whole tree, {span}: "
                    f"at most {MEMORY_TARGET}×)", f"{mem:.2f}× ({_mb(ds.peaks.total)} → {_mb(dl.peaks.total)} MiB)"
                    + ("" if work == 1 else f"; a batch of {work:g}× the events, not judged"),
                    mem <= MEMORY_TARGET if work == 1 else None))
    equal = [(a, b) for a in results for b in results
             if a.size.runs < b.size.runs and a.size.runs * a.size.events == b.size.runs * b.size.events]
    if equal:  # the same events in 10x the runs: what the archive's run count alone does to the peak
        a, b = max(equal, key=lambda pair: pair[1].size.runs / pair[0].size.runs)
        pa, pb = a.passes["default"].peaks.total, b.passes["default"].peaks.total
        mem = pb / max(pa, 1)
        out.append((f"peak memory not growing with the runs at equal events ({a.size.label} → {b.size.label}, "
                    f"default settings, whole tree: at most {MEMORY_TARGET}×)",
                    f"{mem:.2f}× ({_mb(pa)} → {_mb(pb)} MiB)", mem <= MEMORY_TARGET))
    return out


def document(results: List[SizeResult], budget: float, one_batch: Sequence[str], command: str,
             seconds: float) -> Tuple[str, List[Verdict]]:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    judged = verdicts(results)
    archives = ", ".join(f"{r.size.label} ({r.archive_mb:,.0f} MB, generated in {r.generate_s:.0f} s)"
                         for r in results)
    failed = [f"{r.size.label} {p.name} (exit {p.code}, log {p.log})" for r in results for p in r.passes.values()
              if p.code != 0]
    lines = [
        "# End-to-end benchmark",
        "",
        f"- Date: {now}",
        f"- Machine: {os.cpu_count()} cores (shared, noisy), {platform.machine()}, Linux, Python "
        f"{platform.python_version()}",
        f"- Command: `{command}` (took {seconds / 60:.1f} min)",
        f"- Budget: {budget:,.0f} WCU/s, the stand-in's capacity; the pipeline takes it from the on-demand table "
        "(luigi.cfg `on_demand_capacity`). One batch: `" + " ".join(one_batch) + "`.",
        f"- Archives (runs × events per run): {archives}.",
        "- The real `luigi` command, `--local-scheduler --spark-master local[2]`, default settings otherwise.",
        "",
    ]
    if failed:
        lines += ["**Commands that failed:** " + "; ".join(failed), ""]
    lines += [
        "## Targets", "",
        _table(["target", "measured", "result"], [[t, m, _ok(ok)] for t, m, ok in judged], right_from=3), "",
        "## Wall time: default settings against one batch", "", wall_table(results), "",
        "## Budget used over the whole backfill (first write to last, gaps between batches included)", "",
        budget_table(results), "",
        "## WCU per unique item (1% cross-run duplicates, fresh and re-run)", "", wcu_table(results), "",
        "## Peak memory (RSS sampled from /proc every 0.25 s; roles summed per sample)", "",
        memory_table(results), "",
        "## Cost per run (default settings): S3 requests per run by kind, planning and marking", "",
        cost_table(results), "",
        "S3 kinds: " + ", ".join(KINDS) + f"; bookkeeping = {' + '.join(BOOKKEEPING)}. Planning: the command's start "
        "to its first lease request (else its first Spark JVM). Marking: per batch, its first report read to its last "
        "marker written, summed. Every run has the same objects whatever its events, so runs of different sizes "
        "compare.",
        "",
    ]
    return "\n".join(lines), judged
