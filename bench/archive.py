"""Realistic Snowplow enriched archives for tests, the demo and the benchmarks, with their ground truth.

The job must be checked against what was written, not against its own reading of it, so `generate_archive`
returns an `ArchiveTruth` recording every event key, every deliberately bad line and every object. The lines
look like real enriched page views (~1.3 KB, most of the 131 fields empty, JSON contexts, a trailing empty
field) and the objects use every naming and compression the archives of Snowplow releases hold.
"""
from __future__ import annotations

import argparse
import functools
import gzip as gzip_mod
import json
import os
import random
import sys
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from spark.runid import RUN_FORMAT, folder_name
from spark.storage import Location, parse_location, s3_client, write_bytes

FIELDS: List[str] = [
    "app_id", "platform", "etl_tstamp", "collector_tstamp", "dvce_created_tstamp", "event", "event_id", "txn_id",
    "name_tracker", "v_tracker", "v_collector", "v_etl", "user_id", "user_ipaddress", "user_fingerprint",
    "domain_userid", "domain_sessionidx", "network_userid", "geo_country", "geo_region", "geo_city", "geo_zipcode",
    "geo_latitude", "geo_longitude", "geo_region_name", "ip_isp", "ip_organization", "ip_domain", "ip_netspeed",
    "page_url", "page_title", "page_referrer", "page_urlscheme", "page_urlhost", "page_urlport", "page_urlpath",
    "page_urlquery", "page_urlfragment", "refr_urlscheme", "refr_urlhost", "refr_urlport", "refr_urlpath",
    "refr_urlquery", "refr_urlfragment", "refr_medium", "refr_source", "refr_term", "mkt_medium", "mkt_source",
    "mkt_term", "mkt_content", "mkt_campaign", "contexts", "se_category", "se_action", "se_label", "se_property",
    "se_value", "unstruct_event", "tr_orderid", "tr_affiliation", "tr_total", "tr_tax", "tr_shipping", "tr_city",
    "tr_state", "tr_country", "ti_orderid", "ti_sku", "ti_name", "ti_category", "ti_price", "ti_quantity",
    "pp_xoffset_min", "pp_xoffset_max", "pp_yoffset_min", "pp_yoffset_max", "useragent", "br_name", "br_family",
    "br_version", "br_type", "br_renderengine", "br_lang", "br_features_pdf", "br_features_flash",
    "br_features_java", "br_features_director", "br_features_quicktime", "br_features_realplayer",
    "br_features_windowsmedia", "br_features_gears", "br_features_silverlight", "br_cookies", "br_colordepth",
    "br_viewwidth", "br_viewheight", "os_name", "os_family", "os_manufacturer", "os_timezone", "dvce_type",
    "dvce_ismobile", "dvce_screenwidth", "dvce_screenheight", "doc_charset", "doc_width", "doc_height",
    "tr_currency", "tr_total_base", "tr_tax_base", "tr_shipping_base", "ti_currency", "ti_price_base",
    "base_currency", "geo_timezone", "mkt_clickid", "mkt_network", "etl_tags", "dvce_sent_tstamp",
    "refr_domain_userid", "refr_dvce_tstamp", "derived_contexts", "domain_sessionid", "derived_tstamp",
    "event_vendor", "event_name", "event_format", "event_version", "event_fingerprint", "true_tstamp",
]
IDX = {name: i for i, name in enumerate(FIELDS)}
ETL_TSTAMP, EVENT_ID, FINGERPRINT = IDX["etl_tstamp"], IDX["event_id"], IDX["event_fingerprint"]

FILE_KINDS = ("plain", "gz", "gzip", "csv", "csv.gz", "multigz", "s3loader")
GZIP_KINDS = frozenset({"gz", "gzip", "csv.gz", "multigz", "s3loader"})
MULTIGZ_MEMBERS = 3
MALFORMED_REASONS = ("field_count", "event_id", "etl_tstamp")  # the job's report names (spark/report.py)

# Pools of realistic values: a page view from one of a few browsers, places and referrers.
_PAGES = [
    ("/", "Acme Outdoor | Home", ""),
    ("/products/running-shoes", "Trail running shoes | Acme Outdoor", "colour=blue&size=42"),
    ("/products/rain-jacket", "Waterproof rain jacket | Acme Outdoor", ""),
    ("/blog/2026/spring-collection", "Our spring collection – Acme Outdoor blog", "utm_source=newsletter&utm_medium"
     "=email&utm_campaign=spring26"),
    ("/checkout/basket", "Your basket | Acme Outdoor", ""),
    ("/search", "Search results | Acme Outdoor", "q=waterproof+jacket&page=2"),
]
_REFERRERS = [
    ("https", "www.google.com", "443", "/", "", "search", "Google", ""),
    ("https", "www.bing.com", "443", "/search", "q=acme+jacket", "search", "Bing", "acme jacket"),
    ("https", "t.co", "443", "/Xy12abC9", "", "social", "Twitter", ""),
    ("https", "www.acme-outdoor.example", "443", "/", "", "internal", "", ""),
    ("", "", "", "", "", "", "", ""),
]
_BROWSERS = [
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Safari/537.36", "Chrome 12", "Chrome", "124.0.0.0", "WEBKIT", "Mac OS X", "Apple Inc.", "Computer", "0",
     "1440", "900"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox 12",
     "Firefox", "125.0", "GECKO", "Windows 10", "Microsoft Corporation", "Computer", "0", "1920", "1080"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1", "Mobile Safari", "Safari", "17.4", "WEBKIT", "iOS",
     "Apple Inc.", "Mobile", "1", "390", "844"),
]
_PLACES = [
    ("GB", "ENG", "London", "EC2V", "51.5164", "-0.093", "England", "Europe/London", "en-GB"),
    ("US", "CA", "San Francisco", "94107", "37.7697", "-122.3933", "California", "America/Los_Angeles", "en-US"),
    ("DE", "BE", "Berlin", "10115", "52.5323", "13.3846", "Land Berlin", "Europe/Berlin", "de-DE"),
    ("FR", "IDF", "Paris", "75001", "48.8628", "2.3292", "Île-de-France", "Europe/Paris", "fr-FR"),
]
_WORDS = ("trail waterproof jacket shoes hiking spring outdoor blue merino tent lightweight summit route "
          "gore breathable recycled fleece ").split()
_PAD_TEXT = " ".join(_WORDS * 400)
_LATIN1_TITLE = "Caf\xe9 cr\xe8me \xe0 la carte | Acme Outdoor".encode("latin-1")  # not UTF-8


def run_id_at(dt: datetime) -> str:
    """The run folder id of the EmrEtlRunner run started at `dt` (naive datetimes are UTC)."""
    return _utc(dt).strftime(RUN_FORMAT)


def run_time(run_id: str) -> datetime:
    try:
        return datetime.strptime(run_id, RUN_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(f"{run_id!r} is not a run id (YYYY-MM-DD-HH-MM-SS)") from None


def run_ids(start: datetime, count: int, every: timedelta = timedelta(hours=1)) -> List[str]:
    return [run_id_at(start + i * every) for i in range(count)]


def format_tstamp(ms: int) -> str:
    """Epoch milliseconds as Snowplow's `yyyy-MM-dd HH:mm:ss.SSS` (UTC)."""
    secs, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(secs, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + f".{millis:03d}"


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _epoch_ms(dt: datetime) -> int:
    return int(round(_utc(dt).timestamp() * 1000))


@functools.lru_cache(maxsize=4096)
def _parse_tstamp_ms(text: str) -> Optional[int]:
    try:
        return _epoch_ms(datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f"))
    except ValueError:
        return None


def new_uuid(rng: random.Random) -> str:
    """A version-4 UUID drawn from `rng`, so archives are reproducible by seed."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def new_fingerprint(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _self_describing(schema: str, data) -> dict:
    return {"schema": f"iglu:{schema}", "data": data}


def _web_page(page_id: str) -> dict:
    return _self_describing("com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0", {"id": page_id})


def _timing(rng: random.Random, nav_ms: int) -> dict:
    steps = iter(sorted(nav_ms + 1 + rng.getrandbits(11) for _ in range(16)))
    names = ("fetchStart domainLookupStart domainLookupEnd connectStart connectEnd secureConnectionStart "
             "requestStart responseStart responseEnd domLoading domInteractive domContentLoadedEventStart "
             "domContentLoadedEventEnd domComplete loadEventStart loadEventEnd").split()
    data = {"navigationStart": nav_ms, "unloadEventStart": 0, "unloadEventEnd": 0, "redirectStart": 0,
            "redirectEnd": 0}
    data.update((name, next(steps)) for name in names)
    return _self_describing("org.w3/PerformanceTiming/jsonschema/1-0-0", data)


def _ua_parser(browser: tuple) -> dict:
    family, version, os_name = browser[2], browser[3], browser[5]
    return _self_describing("com.snowplowanalytics.snowplow/ua_parser_context/jsonschema/1-0-0", {
        "useragentFamily": family, "useragentMajor": version.split(".")[0], "useragentMinor": "0",
        "useragentPatch": None, "useragentVersion": f"{family} {version}", "osFamily": os_name, "osMajor": None,
        "osMinor": None, "osPatch": None, "osPatchMinor": None, "osVersion": os_name,
        "deviceFamily": "iPhone" if browser[8] == "1" else "Other"})


def _contexts(items: List[dict], version: str = "1-0-0") -> str:
    return _json(_self_describing(f"com.snowplowanalytics.snowplow/contexts/jsonschema/{version}", items))


_PAD_CONTEXT = _self_describing("com.acme/page/jsonschema/1-0-0", {"tags": ""})
_PAD_EMPTY = b'"tags":""'
_PAD_OVERHEAD = len(_json(_PAD_CONTEXT)) + 1  # with its comma


def event_line(event_id: str, fingerprint: str, etl_tstamp: str, *, rng: random.Random, size: int = 1300,
               invalid_utf8: bool = False, v_etl: str = "spark-1.18.0-common-0.35.0") -> bytes:
    """One enriched page_view line, without a line ending: exactly `size` bytes when its bare page view (1.05 to
    1.48 KB, by page, referrer and browser) leaves room for a filler context, else the bare page view.

    Room above the bare page view goes, as it would in real data, to a ua_parser derived context, a
    PerformanceTiming context and then a custom context whose tags fill the rest. `invalid_utf8` gives it a
    Latin-1 page title, as trackers on Latin-1 pages sent.
    """
    etl_ms = _parse_tstamp_ms(etl_tstamp)
    if etl_ms is None:  # a deliberately bad etl_tstamp: the other timestamps still need a base
        etl_ms = 1_777_593_600_000 + rng.randrange(86_400_000)
    collector_ms = etl_ms - rng.randrange(60_000, 3_600_000)
    created_ms = collector_ms - rng.randrange(200, 5_000)
    sent_ms = created_ms + rng.randrange(5, 900)
    derived_ms = collector_ms - (sent_ms - created_ms)
    path, title, query = rng.choice(_PAGES)
    refr = rng.choice(_REFERRERS)
    browser = rng.choice(_BROWSERS)
    place = rng.choice(_PLACES)
    host = "www.acme-outdoor.example"
    v = [""] * len(FIELDS)
    v[0], v[1], v[2] = rng.choice(("acme-web", "acme-shop")), "web", etl_tstamp
    v[3], v[4], v[5], v[6] = format_tstamp(collector_ms), format_tstamp(created_ms), "page_view", event_id
    v[8], v[9], v[10], v[11] = "cf", "js-2.17.3", "ssc-2.3.0-kinesis", v_etl
    v[13] = f"{rng.choice((81, 92, 145, 203))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    v[15], v[16], v[17] = f"{rng.getrandbits(64):016x}", str(rng.randrange(1, 40)), new_uuid(rng)
    v[18:25] = place[:7]
    v[29] = f"https://{host}{path}" + (f"?{query}" if query else "")
    v[30] = title
    v[31] = f"{refr[0]}://{refr[1]}{refr[3]}" + (f"?{refr[4]}" if refr[4] else "") if refr[0] else ""
    v[32:37] = ["https", host, "443", path, query]
    v[38:47] = [refr[0], refr[1], refr[2], refr[3], refr[4], "", refr[5], refr[6], refr[7]]
    if "utm_campaign" in query:
        v[47], v[48], v[51] = "email", "newsletter", "spring26"
    v[77] = browser[0]
    v[78:84] = [browser[1], browser[2], browser[3], "Browser", browser[4], place[8]]
    v[84:94] = ["1", "0", "0", "0", "0", "0", "0", "0", "0", "1"]
    v[94], v[95], v[96] = "24", browser[9], str(int(browser[10]) - rng.randrange(80, 200))
    v[97:101] = [browser[5], browser[5], browser[6], place[7]]
    v[101:105] = [browser[7], browser[8], browser[9], browser[10]]
    v[105], v[106], v[107] = "UTF-8", browser[9], str(rng.randrange(1200, 9000))
    v[115], v[119] = place[7], format_tstamp(sent_ms)
    v[123], v[124] = new_uuid(rng), format_tstamp(derived_ms)
    v[125:129] = ["com.snowplowanalytics.snowplow", "page_view", "jsonschema", "1-0-0"]
    v[129] = fingerprint
    contexts = [_web_page(new_uuid(rng))]
    v[52] = _contexts(contexts)

    def length() -> int:
        n = len("\t".join(v).encode("utf-8"))
        return n - len(title.encode("utf-8")) + len(_LATIN1_TITLE) if invalid_utf8 else n

    derived = _contexts([_ua_parser(browser)], "1-0-1")
    if size - length() >= len(derived) + _PAD_OVERHEAD:
        v[122] = derived
    timing = _timing(rng, created_ms - rng.randrange(500, 3000))
    if size - length() >= len(_json(timing)) + 1 + _PAD_OVERHEAD:
        contexts.append(timing)
        v[52] = _contexts(contexts)
    if size - length() >= _PAD_OVERHEAD:
        v[52] = _contexts(contexts + [_PAD_CONTEXT])
    line = "\t".join(v).encode("utf-8")
    if invalid_utf8:
        line = line.replace(title.encode("utf-8"), _LATIN1_TITLE, 1)
    gap = size - len(line)
    if gap > 0 and _PAD_EMPTY in line:
        start = rng.randrange(len(_PAD_TEXT) - gap) if gap < len(_PAD_TEXT) else 0
        pad = (_PAD_TEXT * (1 + gap // len(_PAD_TEXT)))[start:start + gap].encode("ascii")
        line = line.replace(_PAD_EMPTY, b'"tags":"' + pad + b'"', 1)
    return line


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
        day = _utc(when or datetime(2019, 5, 21)).strftime("%Y-%m-%d")
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
    chunks = _split(list(lines), MULTIGZ_MEMBERS) if kind == "multigz" else [list(lines)]
    texts = [b"".join(line + end for line in chunk) for chunk in chunks]
    if not final_newline and lines:
        last = max(i for i, chunk in enumerate(chunks) if chunk)
        texts[last] = texts[last][:-len(end)]
    if kind not in GZIP_KINDS:
        return texts[0]
    return b"".join(gzip_mod.compress(text, compresslevel=level, mtime=0) for text in texts)


def _split(items: list, parts: int) -> List[list]:
    """`parts` contiguous chunks whose sizes differ by at most one (empty chunks when items are few)."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + q + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out


@dataclass
class ObjectTruth:
    key: str  # relative to the archive location, e.g. 'run=2026-05-01-00-00-00/part-00000.gz'
    kind: str  # a FILE_KINDS entry, or 'marker' for the objects readers must skip
    bytes: int
    lines: int
    crlf: bool = False
    members: int = 0  # gzip members (0 for plain text)
    final_newline: bool = True  # False: the last line has no line ending

    @property
    def is_data(self) -> bool:
        return self.kind != "marker"


@dataclass
class RunTruth:
    run: str
    stream: bool  # stream-enrich run: etl_tstamps vary within the run
    lines: int  # data lines written for the run, bad ones included
    events: List[Tuple[str, str, int]]  # (event_id, fingerprint, etl ms) of every valid fingerprinted line
    malformed: Dict[str, int]  # by reason, MALFORMED_REASONS
    malformed_at: List[Tuple[str, int, str]]  # (object key, 1-based line number, reason)
    no_fingerprint: int
    in_run_duplicates: int  # lines repeating a key already on an earlier line of the run
    cross_run_duplicates: int  # lines whose key was written by an earlier run
    same_id_other_fingerprint: int  # a second key sharing an event_id (synthetic duplicates): its own item
    invalid_utf8: int  # valid lines holding non-UTF-8 bytes
    objects: List[str] = field(default_factory=list)  # data object keys

    @property
    def etl_ms(self) -> Optional[int]:
        """The run's earliest etl_tstamp among its valid lines (generation keeps the others no earlier)."""
        return min((ms for _, _, ms in self.events), default=None)

    @property
    def unique_keys(self) -> set:
        return {(e, f) for e, f, _ in self.events}


@dataclass
class ArchiveTruth:
    dest: str
    runs: List[RunTruth]
    objects: List[ObjectTruth]

    def run(self, run_id: str) -> RunTruth:
        return next(r for r in self.runs if r.run == run_id)

    def expected_manifest(self, etl_time: str = "run",
                          runs: Optional[Iterable[str]] = None) -> Dict[Tuple[str, str], int]:
        """(eventId, fingerprint) -> etlTime in epoch seconds, the earliest over the (given) runs.

        etl_time 'run' gives every event its run's earliest etl_tstamp; 'event' its own.
        """
        return {key: t for key, (t, _) in self.expected_items(etl_time=etl_time, runs=runs).items()}

    def expected_items(self, ttl_days: int = 180, etl_time: str = "run", now: Optional[float] = None,
                       runs: Optional[Iterable[str]] = None) -> Dict[Tuple[str, str], Tuple[int, int]]:
        """Key -> (etlTime, ttl) of the final table after a backfill of the (given) runs into an empty one.

        With `now`, copies whose ttl is not after it are expired and never written; of the rest, the earliest wins.
        """
        wanted = set(runs) if runs is not None else None
        out: Dict[Tuple[str, str], Tuple[int, int]] = {}
        for run in self.runs:
            if wanted is not None and run.run not in wanted:
                continue
            for eid, fp, ms in run.events:
                t = (run.etl_ms if etl_time == "run" else ms) // 1000
                ttl = t + ttl_days * 86400
                if (now is None or ttl > now) and t < out.get((eid, fp), (t + 1, 0))[0]:
                    out[(eid, fp)] = (t, ttl)
        return out

    def describe(self) -> str:
        data = [o for o in self.objects if o.is_data]
        kinds = sorted({o.kind for o in data}, key=FILE_KINDS.index)
        malformed = {r: sum(run.malformed[r] for run in self.runs) for r in MALFORMED_REASONS}
        stream = [r.run for r in self.runs if r.stream]
        first, last = self.runs[0].run, self.runs[-1].run
        return (
            f"Wrote {len(self.runs)} runs (run={first} .. run={last}) to {self.dest}: "
            f"{sum(r.lines for r in self.runs)} lines in {len(data)} data objects of kinds {', '.join(kinds)} "
            f"({sum(o.crlf for o in data)} with CRLF endings); "
            f"{sum(r.in_run_duplicates for r in self.runs)} in-run and "
            f"{sum(r.cross_run_duplicates for r in self.runs)} cross-run duplicate lines, "
            f"{sum(malformed.values())} malformed lines ("
            + ", ".join(f"{n} {r}" for r, n in malformed.items())
            + f"), {sum(r.no_fingerprint for r in self.runs)} without a fingerprint, "
            f"{sum(r.invalid_utf8 for r in self.runs)} with non-UTF-8 bytes; "
            + (f"stream-enrich run(s) {', '.join(stream)}; " if stream else "")
            + f"{len(self.objects) - len(data)} marker or zero-byte objects that readers skip. "
            f"Expected manifest items: {len(self.expected_manifest())}."
        )


@dataclass
class _Line:
    event_id: str
    fingerprint: str
    etl_ms: int
    reason: str = ""  # malformed reason, '' for a well-formed line
    variant: int = 0
    invalid_utf8: bool = False
    counted: bool = True  # a fingerprinted valid event, recorded in RunTruth.events


def _plan_run(rng: random.Random, n: int, etls: List[int], earlier: List[Tuple[str, str]], stream: bool,
              f_dup: float, f_cross: float, f_malformed: float, f_nofp: float,
              offset: int = 0) -> Tuple[List[_Line], Dict[str, int]]:
    """The run's lines in file order, and how many of each deliberate kind it holds.

    Malformed lines cycle through the reasons and their variants from `offset`, so that runs with one or two bad
    lines each still cover every reason between them.
    """
    n_mal, n_nofp, n_dup = round(n * f_malformed), round(n * f_nofp), round(n * f_dup)
    n_cross = min(round(n * f_cross), len(earlier))
    n_synth = n_dup // 2
    n_new = n - n_mal - n_nofp - n_dup - n_cross - n_synth
    if n_new < (1 if n_dup or n_synth else 0):
        raise ValueError(f"{n} events per run cannot hold the requested fractions of bad and duplicate lines")

    def etl() -> int:
        return rng.choice(etls)

    new = [_Line(new_uuid(rng), new_fingerprint(rng), etl()) for _ in range(n_new)]
    lines = list(new)
    lines += [_Line(o.event_id, o.fingerprint, etl() if stream else o.etl_ms) for o in rng.choices(new, k=n_dup)]
    lines += [_Line(o.event_id, new_fingerprint(rng), etl()) for o in rng.choices(new, k=n_synth)]
    lines += [_Line(e, f, etl()) for e, f in rng.sample(earlier, n_cross)]
    lines += [_Line(new_uuid(rng), "", etl(), counted=False) for _ in range(n_nofp)]
    lines += [_Line(new_uuid(rng), new_fingerprint(rng), etl(), MALFORMED_REASONS[i % 3], i // 3 % 3, counted=False)
              for i in range(offset, offset + n_mal)]
    rng.shuffle(lines)
    valid = [x for x in lines if x.counted]
    for x in rng.sample(valid, min(len(valid), max(1, len(valid) // 100))):
        x.invalid_utf8 = True
    # Stream runs: the run's earliest etl_tstamp must be a counted event's, whatever the job counts from.
    if stream and valid:
        low = min(x.etl_ms for x in valid)
        for x in lines:
            if not x.counted:
                x.etl_ms = max(x.etl_ms, low)
    return lines, {"dup": n_dup, "cross": n_cross, "synth": n_synth, "nofp": n_nofp}


def _render(x: _Line, rng: random.Random, size: int, v_etl: str) -> bytes:
    """A line, broken on purpose in one way when the plan says so."""
    event_id, etl = x.event_id, format_tstamp(x.etl_ms)
    if x.reason == "event_id":
        event_id = ("", "evt-0000042", x.event_id[:-1])[x.variant]
    elif x.reason == "etl_tstamp":
        etl = ("", "2026-13-01 00:00:00.000", "not-a-timestamp")[x.variant]
    line = event_line(event_id, x.fingerprint, etl, rng=rng, size=size, invalid_utf8=x.invalid_utf8, v_etl=v_etl)
    if x.reason == "field_count":
        fields = line.split(b"\t")
        line = b"\t".join((fields[:-1], fields + [b"extra"], fields[:60])[x.variant])
    return line


def generate_archive(dest: str, runs: List[str], events_per_run: int, *, kinds: Sequence[str] = FILE_KINDS,
                     duplicate_fraction: float = 0.02, cross_run_duplicates: float = 0.01,
                     malformed_fraction: float = 0.0, no_fingerprint_fraction: float = 0.0, extras: bool = True,
                     stream_enrich_runs: int = 0, seed: int = 0, objects_per_run: Optional[int] = None,
                     size: int = 1300, client=None) -> ArchiveTruth:
    """Write `runs` run folders of `events_per_run` lines each under `dest` (local dir or s3://bucket/prefix).

    Runs are written oldest first; the last `stream_enrich_runs` are stream-enrich runs (S3 Loader objects,
    etl_tstamps spread over the hour before the run). Batch runs share one etl_tstamp, the run's start with
    milliseconds. Each run holds `objects_per_run` data objects (default one per kind, kinds rotating from run to
    run when fewer); its last object uses CRLF endings and its second lacks a final newline when there are enough.
    `extras` adds `_SUCCESS`, `*_$folder$` and zero-byte objects, and an empty gzip object (a data object of 0
    lines, as Spark writes for an empty partition). The S3 bucket must exist.
    """
    bad = [k for k in kinds if k not in FILE_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown file kinds {bad} (one of {', '.join(FILE_KINDS)})")
    if events_per_run < 1 or len(set(runs)) != len(runs) or not runs:
        raise ValueError("generate_archive needs distinct runs and at least one event per run")
    if not 0 <= stream_enrich_runs <= len(runs):
        raise ValueError(f"stream_enrich_runs must be between 0 and {len(runs)}")
    times = {r: run_time(r) for r in runs}
    loc = parse_location(dest)
    if loc.is_s3 and client is None:
        client = s3_client()
    rng = random.Random(seed)
    earlier: List[Tuple[str, str]] = []
    truth = ArchiveTruth(loc.uri, [], [])
    ordered = sorted(runs)
    for r_index, run in enumerate(ordered):
        stream = r_index >= len(ordered) - stream_enrich_runs
        start_ms = _epoch_ms(times[run])
        if stream:
            etls = [start_ms - rng.randrange(60_000, 3_300_000) for _ in range(max(4, events_per_run // 10))]
            run_kinds = ["s3loader"] if "s3loader" in kinds else list(kinds)
            v_etl = "stream-enrich-1.4.2-common-1.4.2"
        else:
            etls = [start_ms + rng.randrange(1000)]
            run_kinds = [k for k in kinds if k != "s3loader"] or list(kinds)
            v_etl = "spark-1.18.0-common-0.35.0"
        lines, planned = _plan_run(rng, events_per_run, etls, earlier, stream, duplicate_fraction,
                                   cross_run_duplicates, malformed_fraction, no_fingerprint_fraction, r_index)
        k = max(1, min(objects_per_run or len(run_kinds), len(lines)))
        object_kinds = [run_kinds[(r_index + j) % len(run_kinds)] for j in range(k)]
        rt = RunTruth(run, stream, len(lines), [], {r: 0 for r in MALFORMED_REASONS}, [], planned["nofp"],
                      planned["dup"], planned["cross"], planned["synth"], sum(x.invalid_utf8 for x in lines))
        folder = folder_name(run)
        for j, (kind, chunk) in enumerate(zip(object_kinds, _split(lines, k))):
            name = object_name(kind, j, rng, times[run])
            crlf, final_newline = k >= 2 and j == k - 1, not (k >= 3 and j == 1)
            rendered = [_render(x, rng, size, v_etl) for x in chunk]
            data = encode_object(kind, rendered, crlf=crlf, final_newline=final_newline)
            key = f"{folder}/{name}"
            write_bytes(loc.child(folder, name), data, client)
            members = 0 if kind not in GZIP_KINDS else (MULTIGZ_MEMBERS if kind == "multigz" else 1)
            truth.objects.append(ObjectTruth(key, kind, len(data), len(chunk), crlf, members, final_newline))
            rt.objects.append(key)
            for number, x in enumerate(chunk, 1):
                if x.reason:
                    rt.malformed[x.reason] += 1
                    rt.malformed_at.append((key, number, x.reason))
                elif x.counted:
                    rt.events.append((x.event_id, x.fingerprint, x.etl_ms))
        if extras:
            _write_extras(loc, folder, k, client, truth, rt)
        truth.runs.append(rt)
        earlier.extend(sorted(rt.unique_keys - set(earlier)))
    return truth


def _write_extras(loc: Location, folder: str, k: int, client, truth: ArchiveTruth, rt: RunTruth) -> None:
    markers = [f"{folder}/_SUCCESS", f"{folder}/part-{k:05d}_$folder$", f"{folder}/part-{k + 1:05d}",
               f"{folder}_$folder$"]
    for key in markers:
        write_bytes(_child(loc, key), b"", client)
        truth.objects.append(ObjectTruth(key, "marker", 0, 0))
    empty = encode_object("gz", [])
    key = f"{folder}/part-{k + 2:05d}.gz"
    write_bytes(_child(loc, key), empty, client)
    truth.objects.append(ObjectTruth(key, "gz", len(empty), 0, members=1))
    rt.objects.append(key)


def _child(loc: Location, key: str) -> Location:
    return loc.child(*key.split("/"))


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


# --- command line -------------------------------------------------------------------------------------------

def _start(text: Optional[str], runs: int) -> datetime:
    if text:
        return run_time(text)
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=runs)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.archive", description=__doc__.splitlines()[0])
    p.add_argument("--dest", required=True, help="local directory or s3://bucket/prefix (the bucket must exist)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--events-per-run", type=int, default=400)
    p.add_argument("--start", help="first run id, YYYY-MM-DD-HH-MM-SS (default: hourly runs ending now, so "
                                   "their items are not already past the 180-day ttl)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--malformed-fraction", type=float, default=0.0)
    p.add_argument("--no-fingerprint-fraction", type=float, default=0.0)
    p.add_argument("--stream-enrich-runs", type=int, default=0)
    p.add_argument("--demo", action="store_true", help="5 runs of every kind with duplicates, bad lines and one "
                                                       "stream-enrich run")
    a = p.parse_args(argv)
    try:
        if a.demo:
            a.runs, a.events_per_run, a.stream_enrich_runs = 5, 400, 1
            a.malformed_fraction, a.no_fingerprint_fraction = 0.0075, 0.005
        truth = generate_archive(a.dest, run_ids(_start(a.start, a.runs), a.runs), a.events_per_run,
                                 malformed_fraction=a.malformed_fraction,
                                 no_fingerprint_fraction=a.no_fingerprint_fraction,
                                 stream_enrich_runs=a.stream_enrich_runs, seed=a.seed)
    except Exception as e:  # one line for the user, whatever broke
        print(f"bench.archive: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print(truth.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
