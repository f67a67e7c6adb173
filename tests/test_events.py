"""The line parser and the item rules of spark/events.py, on real-format 131-field lines."""
from __future__ import annotations

import calendar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark import events as ev
from spark.report import MALFORMED_REASONS, MAX_EXAMPLES

EID = "5f5a8ad4-0a0c-4b8e-9c2f-1d3e5a7b9c01"
FP = "c6ef2fc0b5d0d5f4e3a7b0b7d2f9e1aa"
ETL = "2026-05-01 12:34:56.789"
ETL_MS = calendar.timegm((2026, 5, 1, 12, 34, 56)) * 1000 + 789


def line(event_id=EID, fingerprint=FP, etl=ETL, fields=131, **set_fields) -> bytes:
    """A tab-separated enriched-event line with most fields empty, like a real one; `f<N>=...` sets field N."""
    values = [b""] * 131
    values[0], values[1], values[5] = b"acme-web", b"web", b"page_view"
    for i, v in ((2, etl), (6, event_id), (129, fingerprint)):
        values[i] = v.encode()
    for name, v in set_fields.items():
        values[int(name[1:])] = v
    return b"\t".join((values + [b"x"] * fields)[:fields])


def classify_line(text: bytes):
    """One line through the job's parser: ('valid', event), ('no_fingerprint', None) or (malformed reason, None)."""
    tally = ev.LineTally()
    events = list(ev.scan_lines([[text]], "line", tally))
    if events:
        return "valid", events[0]
    if tally.no_fingerprint:
        return "no_fingerprint", None
    return next(r for r, n in tally.malformed.items() if n), None


def test_a_real_format_line_is_valid():
    assert classify_line(line()) == ("valid", (EID, FP, ETL_MS))


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_line_endings_do_not_change_the_event(ending):
    assert classify_line(line() + ending) == ("valid", (EID, FP, ETL_MS))
    assert classify_line(line(f130=b"{}") + ending) == ("valid", (EID, FP, ETL_MS))
    assert classify_line(line(fingerprint="") + ending) == ("no_fingerprint", None)
    assert classify_line(line(fields=130) + ending) == ("field_count", None)


def test_trailing_empty_fields_are_kept():
    text = line(f128=b"", f130=b"")
    assert text.endswith(b"\t\t" + FP.encode() + b"\t")
    assert classify_line(text)[0] == "valid"


@pytest.mark.parametrize("fields", [1, 130, 132, 200])
def test_wrong_field_count(fields):
    assert classify_line(line(fields=fields)) == ("field_count", None)


def test_empty_line_is_a_field_count_error():
    assert classify_line(b"") == ("field_count", None)


@pytest.mark.parametrize("event_id", [
    "", "not-a-uuid", EID[:-1], EID + "0", "{" + EID + "}", EID.replace("-", ""), EID.replace("a", "g"),
    " " + EID, EID.replace("-", "_"),
    EID[:35] + "-",  # a fifth dash where a digit belongs
    EID[1:9] + "-" + EID[9:],  # 36 characters, a dash one place early
    "-" * 36, "0" * 36, EID[:8] + "-" + EID[9:13] + "--" + EID[15:],
    EID.replace("5", "\u0665"), EID[:-1] + "\n",
])
def test_bad_event_id(event_id):
    assert classify_line(line(event_id=event_id)) == ("event_id", None)


def test_uppercase_event_id_is_written_as_the_shredders_do():
    assert classify_line(line(event_id=EID.upper())) == ("valid", (EID, FP, ETL_MS))


@pytest.mark.parametrize("etl", [
    "", "not-a-timestamp", "2026-13-01 00:00:00.000", "2026-02-30 00:00:00.000", "2023-02-29 00:00:00.000",
    "2026-05-01 24:00:00.000", "2026-05-01 12:60:00.000", "2026-05-01T12:34:56.789", "2026-05-01 12:34:56.",
    "2026-05-01 12:34:56.789Z", "26-05-01 12:34:56.789", "0000-01-01 00:00:00.000",
])
def test_bad_etl_tstamp(etl):
    assert classify_line(line(etl=etl)) == ("etl_tstamp", None)


def test_checks_run_in_order_one_reason_per_line():
    assert classify_line(line(event_id="", etl="", fields=130)) == ("field_count", None)
    assert classify_line(line(event_id="x", etl="")) == ("event_id", None)
    assert classify_line(line(etl="", fingerprint="")) == ("etl_tstamp", None)


def test_empty_fingerprint():
    assert classify_line(line(fingerprint="")) == ("no_fingerprint", None)


def test_bytes_that_are_not_utf8_elsewhere_do_not_break_a_line():
    text = line(f30=b"Caf\xe9 cr\xe8me \xff\xfe", f52=b"\x80\x81", f130=b"\xc3")
    assert classify_line(text) == ("valid", (EID, FP, ETL_MS))


def test_tab_inside_a_field_shifts_the_count():
    assert classify_line(line(f30=b"a\tb")) == ("field_count", None)


@pytest.mark.parametrize("text, ms", [
    ("2026-05-01 12:34:56.789", ETL_MS),
    ("2026-05-01 12:34:56", ETL_MS - 789),
    ("2026-05-01 12:34:56.7", ETL_MS - 89),
    ("2026-05-01 12:34:56.789999", ETL_MS),
    ("1970-01-01 00:00:00.000", 0),
    ("2024-02-29 23:59:59.999", calendar.timegm((2024, 2, 29, 23, 59, 59)) * 1000 + 999),
])
def test_parse_etl_tstamp(text, ms):
    assert ev.parse_etl_tstamp(text.encode()) == ms


def test_etl_seconds_truncate_milliseconds():
    assert ev.etl_seconds(ETL_MS) == ETL_MS // 1000 == calendar.timegm((2026, 5, 1, 12, 34, 56))
    assert ev.etl_seconds(1_999) == 1


def test_ttl_and_expiry():
    assert ev.ttl_for(1_000_000, 180) == 1_000_000 + 180 * 86400
    assert ev.ttl_for(5, 0) == 5
    assert ev.is_expired(100, 100.0)
    assert ev.is_expired(100, 100.5)
    assert not ev.is_expired(101, 100.9)


def test_scan_counts_every_line_once_and_names_lines_not_content():
    batches = [[line(), line(fields=130), line(fingerprint="")], [line(event_id="nope"), line(etl="x"), line()]]
    tally = ev.LineTally()
    found = list(ev.scan_lines(batches, "part-00000.gz", tally))
    assert found == [(EID, FP, ETL_MS)] * 2
    assert (tally.lines, tally.valid, tally.no_fingerprint) == (6, 2, 1)
    assert tally.malformed == {"field_count": 1, "event_id": 1, "etl_tstamp": 1}
    assert tally.examples == ["part-00000.gz:2: field_count", "part-00000.gz:4: event_id",
                              "part-00000.gz:5: etl_tstamp"]
    assert tally.min_etl_ms == ETL_MS


def test_examples_are_capped_and_numbering_spans_batches():
    tally = ev.LineTally()
    list(ev.scan_lines([[b"x"] * 7, [b"y"] * 7], "obj", tally))
    assert tally.malformed["field_count"] == 14
    assert len(tally.examples) == MAX_EXAMPLES
    assert tally.examples[-1] == "obj:10: field_count"


def test_min_etl_covers_events_without_fingerprint_but_not_malformed_lines():
    early, earlier = "2026-05-01 00:00:01.500", "2026-05-01 00:00:00.100"
    tally = ev.LineTally()
    list(ev.scan_lines([[line(etl=early), line(etl=earlier, fingerprint=""),
                         line(etl="2020-01-01 00:00:00.000", fields=12)]], "o", tally))
    assert tally.min_etl_ms == ev.parse_etl_tstamp(earlier.encode())


def test_memoised_timestamps_are_bounded(monkeypatch):
    monkeypatch.setattr(ev, "_CACHE_LIMIT", 3)
    cache = {}
    stamps = [f"2026-05-01 00:00:0{i}.000" for i in range(8)]
    found = list(ev.scan_lines([[line(etl=s) for s in stamps]], "o", ev.LineTally(), cache))
    assert [ms for _, _, ms in found] == [ev.parse_etl_tstamp(s.encode()) for s in stamps]
    assert len(cache) <= 3


# --- collapsing copies of one key --------------------------------------------------------------------------

NOW = 1_800_000_000.0
FRESH = int(NOW) - 86400  # an etlTime whose 180-day ttl is far ahead
STALE = int(NOW) - 181 * 86400  # an etlTime whose ttl is past


def test_merge_copies_keeps_earliest_per_run_and_counts_copies():
    a = ev.first_copy(20, "r2")
    b = ev.merge_copies(ev.first_copy(30, "r1"), ev.first_copy(10, "r1"))
    assert b == ((10, "r1", 2),)
    assert ev.merge_copies(a, b) == ((10, "r1", 2), (20, "r2", 1))
    assert ev.merge_copies(ev.merge_copies(a, b), ev.first_copy(5, "r2")) == ((5, "r2", 2), (10, "r1", 2))


def test_settle_single_copy_is_written():
    assert ev.settle(ev.first_copy(FRESH, "r1"), 180, NOW, False) == ((FRESH, "r1"), [])


def test_settle_in_run_duplicates_count_extra_copies():
    winner, outcomes = ev.settle(((FRESH, "r1", 3),), 180, NOW, False)
    assert winner == (FRESH, "r1")
    assert outcomes == [("r1", "in_run_duplicates", 2)]


def test_settle_earliest_run_wins_and_ties_go_to_the_earlier_run():
    winner, outcomes = ev.settle(((FRESH, "r2", 1), (FRESH + 5, "r1", 1), (FRESH, "r3", 2)), 180, NOW, False)
    assert winner == (FRESH, "r2")
    assert sorted(outcomes) == [("r1", "batch_duplicates", 1), ("r3", "batch_duplicates", 1),
                                ("r3", "in_run_duplicates", 1)]


def test_settle_expired_copies_are_not_candidates():
    winner, outcomes = ev.settle(((STALE, "r1", 1), (FRESH, "r2", 1)), 180, NOW, False)
    assert winner == (FRESH, "r2")
    assert outcomes == [("r1", "expired", 1)]
    assert ev.settle(((STALE, "r1", 2),), 180, NOW, False) == (None, [("r1", "in_run_duplicates", 1),
                                                                      ("r1", "expired", 1)])


def test_settle_write_expired_keeps_them():
    assert ev.settle(((STALE, "r1", 1), (FRESH, "r2", 1)), 180, NOW, True) == (
        (STALE, "r1"), [("r2", "batch_duplicates", 1)])


# --- property: whatever the bytes, no crash and one outcome per line ----------------------------------------

_PIECES = [b"", b"x", EID.encode(), EID.upper().encode(), ETL.encode(), FP.encode(), b"\xff\xfe", b"\r",
           b"2026-02-30 00:00:00.000", b"\t", b"9999-12-31 23:59:59.999", b"0000-01-01 00:00:00.000"]


def _mutated(edits, fields) -> bytes:
    values = line().split(b"\t")
    for index, piece in edits:
        values[index] = piece
    return b"\t".join((values + [b""] * 5)[:fields])


# A real line with a few fields replaced (the three read ones most often) and its field count nudged.
near_lines = st.builds(
    _mutated,
    st.lists(st.tuples(st.sampled_from([2, 6, 129, 2, 6, 129, 0, 30, 130]), st.sampled_from(_PIECES)), max_size=4),
    st.sampled_from([131, 131, 131, 130, 132]),
)
any_lines = st.one_of(st.binary(max_size=400).map(lambda b: b.split(b"\n")), st.lists(near_lines, max_size=8))


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(any_lines, max_size=4))
def test_any_bytes_never_crash_and_each_line_is_classified_once(batches):
    tally = ev.LineTally()
    found = list(ev.scan_lines(batches, "obj", tally))
    total = sum(len(b) for b in batches)
    assert tally.lines == total
    assert total == sum(tally.malformed[r] for r in MALFORMED_REASONS) + tally.no_fingerprint + tally.valid
    assert len(found) == tally.valid
    for event_id, fingerprint, ms in found:
        assert len(event_id) == 36 and event_id == event_id.lower() and fingerprint and isinstance(ms, int)
    outcomes = [classify_line(x)[0] for b in batches for x in b]
    assert outcomes.count("valid") == tally.valid
    assert outcomes.count("no_fingerprint") == tally.no_fingerprint


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(near_lines, st.binary(max_size=300).map(lambda b: b.replace(b"\n", b""))))
def test_a_line_is_classified_the_same_with_or_without_its_ending(text):
    assert classify_line(text) == classify_line(text + b"\n") == classify_line(text + b"\r\n")


# --- real line shapes: each classified on purpose ---------------------------------------------------------------
# A line ends written, expired (its ttl is past: not written unless --write-expired), without fingerprint, or
# malformed with its reason. Where that differs from what a Snowplow shredder (RDB Shredder, which parses lines with
# the Scala Analytics SDK: exactly 131 fields, timestamps through java.time.Instant.parse) would do, the test says so.

NINE_DIGITS = "2021-10-15 09:05:41.458800585"  # stream transformer inputs
NINE_DIGITS_MS = calendar.timegm((2021, 10, 15, 9, 5, 41)) * 1000 + 458
BOM = b"\xef\xbb\xbf"


def events_of(text: bytes) -> list:
    return list(ev.scan_lines([[text]], "obj", ev.LineTally()))


def outcome(text: bytes, now: float, write_expired: bool = False) -> str:
    """What becomes of one line in a run of its own: the parser, then the rules that settle a key's item."""
    tally = ev.LineTally()
    found = list(ev.scan_lines([[text]], "obj", tally))
    if not found:
        reasons = [r for r, n in tally.malformed.items() if n]
        return "no fingerprint" if tally.no_fingerprint else f"malformed: {reasons[0]}"
    ((_, _, etl_ms),) = found
    winner, outcomes = ev.settle(((ev.etl_seconds(etl_ms), "run", 1),), 180, now, write_expired)
    return "written" if winner else outcomes[0][1]


def test_etl_tstamp_with_nine_fraction_digits_is_written_or_expired_by_its_time():
    """Nanoseconds are truncated to milliseconds (the item's etlTime to seconds), as a shredder's Instant does: the
    same item. Like any event, it is expired once 180 days have passed since its etl_tstamp. Ten digits are more
    than Instant.parse reads: malformed here and a bad row for a shredder."""
    text = line(etl=NINE_DIGITS)
    assert events_of(text) == [(EID, FP, NINE_DIGITS_MS)]
    etl = NINE_DIGITS_MS // 1000
    assert outcome(text, now=etl + 86400) == "written"
    assert outcome(text, now=etl + 181 * 86400) == "expired"
    assert outcome(text, now=etl + 181 * 86400, write_expired=True) == "written"
    assert outcome(line(etl=NINE_DIGITS + "1"), now=etl) == "malformed: etl_tstamp"


@pytest.mark.parametrize("etl", ["-0001-01-01 00:00:00.000", "-2021-10-15 09:05:41.458", "0000-01-01 00:00:00.000"])
def test_negative_or_zero_year_in_etl_tstamp_is_malformed_unlike_a_shredder(etl):
    """Differs from a shredder: Instant.parse accepts a signed year (and year 0), so a shredder would take the line
    as valid, with an etlTime thousands of years before 1970. Here it is malformed (etl_tstamp), on purpose: no ETL
    ran then, and with --etl-time run the run's earliest etl_tstamp becomes every event's etlTime, so one such line
    would expire every item of its run. As a malformed line it is counted and does not set the run's etlTime."""
    assert outcome(line(etl=etl), now=NOW) == "malformed: etl_tstamp"
    tally = ev.LineTally()
    list(ev.scan_lines([[line(etl=etl), line()]], "obj", tally))
    assert tally.min_etl_ms == ETL_MS


def test_negative_year_in_a_timestamp_the_manifest_does_not_read_changes_nothing():
    """dvce_created_tstamp (field 4) from a device clock: not read here, parsed fine by a shredder; both write it."""
    text = line(f4=b"-0001-01-01 00:00:00.000", f3=ETL.encode())
    assert events_of(text) == [(EID, FP, ETL_MS)]
    assert outcome(text, now=ETL_MS / 1000) == "written"


def test_byte_order_mark_before_the_first_field_of_an_object_is_written():
    """The reader (spark/archive.py) hands an object's lines as they are, after inflating gzip: a UTF-8 BOM arrives
    in front of app_id, the first field of the object's first line only. app_id is not read and the tab count is
    unchanged, so the line is valid and its item the one a shredder writes (app_id is not part of the item)."""
    batches = [[BOM + line() + b"\n", line(event_id=EID.replace("5f", "6f")) + b"\n"]]
    tally = ev.LineTally()
    found = list(ev.scan_lines(batches, "part-00000.gz", tally))
    assert found == [(EID, FP, ETL_MS), (EID.replace("5f", "6f"), FP, ETL_MS)]
    assert (tally.lines, tally.valid, tally.examples) == (2, 2, [])
    assert outcome(BOM + line() + b"\r\n", now=ETL_MS / 1000) == "written"


@pytest.mark.parametrize("fingerprint", [
    "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",  # 40 hex digits: the fingerprint enrichment's SHA1 hash
    "1234",  # 4 digits
    "A94A8FE5CCB19BA61C4C0873D391E987982FBBD3",
])
def test_fingerprints_that_are_not_32_hex_digits_are_written_as_they_are(fingerprint):
    """The fingerprint is a string key to DynamoDB and to a shredder, which writes the field unchanged: so here.
    Any non-empty value is kept byte for byte (no case change), so the item matches the shredder's lookup."""
    assert events_of(line(fingerprint=fingerprint)) == [(EID, fingerprint, ETL_MS)]
    assert outcome(line(fingerprint=fingerprint), now=ETL_MS / 1000) == "written"


@pytest.mark.parametrize("fields", [104, 108, 109, 120, 121, 123])
def test_pre_r71_lines_are_malformed_like_a_shredders_bad_rows(fields):
    """Lines enriched before R71 (2015) have fewer fields and no event_fingerprint at all: R71 added it. A shredder
    refuses them as bad rows (the Analytics SDK wants 131 fields) and none ever wrote a manifest item for one, so
    here too they are malformed (field_count), never written; their events could never match an item anyway. A
    run made of them fails the --max-malformed-fraction check: start the backfill after such runs with --since."""
    text = line(fields=fields)
    assert text.count(b"\t") == fields - 1 and text.split(b"\t")[6] == EID.encode()
    assert outcome(text, now=ETL_MS / 1000) == "malformed: field_count"
    tally = ev.LineTally()
    assert list(ev.scan_lines([[text + b"\n"] * 3, [line()]], "old.gz", tally)) == [(EID, FP, ETL_MS)]
    assert (tally.malformed["field_count"], tally.valid, tally.examples[0]) == (3, 1, "old.gz:1: field_count")
