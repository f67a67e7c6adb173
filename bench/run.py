"""All benchmarks in one command: extraction, writing and one batch's budget use, printed and saved as Markdown
(bench/RESULTS.md).

    python -m bench.run            # ~8 minutes on 2 cores
    python -m bench.run --quick    # ~2.5 minutes, smaller sizes (the figures are noisier)
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import List, Optional, Tuple

from bench import batch_budget, extract, write, write_config, write_report
from bench.archive_objects import big_object

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
EXTRACT_SIZES = {"full": (300_000, 5), "quick": (50_000, 3)}  # events per file, rounds (best rate counts)


def extraction(events: int, repeat: int) -> Tuple[str, List[Tuple[str, bool]]]:
    """bench.extract's measurements on two freshly generated files (gzip and plain, same seed)."""
    with tempfile.TemporaryDirectory(prefix="bench-run-") as work:
        gz = big_object(os.path.join(work, "part-00000.gz"), events, gzip=True, seed=1)
        plain = big_object(os.path.join(work, "part-00001"), events, gzip=False, seed=1)
        results = extract.measure(gz, plain, repeat)
        about = (f"{events:,} events of {gz.raw_bytes / events:,.0f} B per line: gzip {gz.bytes / 1e6:,.1f} MB "
                 f"(ratio {gz.raw_bytes / gz.bytes:.1f}x), plain {plain.bytes / 1e6:,.1f} MB; rates are the "
                 f"best of {repeat} rounds by CPU time, ratios the median of the rounds' paired ratios; one process.")
    return f"{extract.table(results)}\n\n{about}", extract.verdicts(results)


def document(command: str, sections: List[Tuple[str, str, List[Tuple[str, bool]]]], seconds: float) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {now}",
        f"- Machine: {os.cpu_count()} cores (shared, noisy), {platform.machine()}, Linux, Python "
        f"{platform.python_version()}",
        f"- Command: `{command}` (took {seconds / 60:.1f} min)",
        "",
    ]
    for title, body, verdicts in sections:
        lines += [f"## {title}", "", body, ""]
        lines += [f"- {'PASS' if ok else 'MISS'}: {text}" for text, ok in verdicts]
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes: about two and a half minutes")
    p.add_argument("--output", default=RESULTS, help=f"Markdown file written (default {RESULTS}); '-' for none")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    a = p.parse_args(argv)
    size = "quick" if a.quick else "full"
    started = time.perf_counter()
    events, repeat = EXTRACT_SIZES[size]
    print(f"extraction: {events:,} events per file, best of {repeat}...", file=sys.stderr, flush=True)
    extract_body, extract_verdicts = extraction(events, repeat)
    print("writing: conditional, fast and the original's strategy against the stand-in...", file=sys.stderr,
          flush=True)
    report = write.run(write_config.DEFAULTS[size])
    write_body = write_report.tables(report)
    print("budget use within one batch: the real job at a low budget through the stand-in...", file=sys.stderr,
          flush=True)
    budget = batch_budget.run(batch_budget.DEFAULTS[size])
    command = "python -m bench.run" + (" --quick" if a.quick else "")
    sections = [("Extraction (events/s per core)", extract_body, extract_verdicts),
                ("Writing (against the capacity-enforcing stand-in)", write_body, write_report.verdicts(report)),
                ("Budget use within one batch (the real job)", batch_budget.markdown(budget),
                 batch_budget.verdicts(budget))]
    text = document(command, sections, time.perf_counter() - started)
    print(text)
    if a.output != "-":
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"written to {a.output}", file=sys.stderr)
    missed = [t for _, _, checks in sections for t, ok in checks if not ok]
    return 1 if a.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
