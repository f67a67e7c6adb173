"""Realistic Snowplow enriched event lines: the 131 fields, run ids, timestamps and ids drawn from a seed.

The lines look like real enriched page views (~1.3 KB, most fields empty, JSON contexts, a trailing empty field)
so that the parser and gzip see what archives hold; `bench.archive` arranges them into runs and objects.
"""
from __future__ import annotations

import functools
import json
import random
from datetime import datetime, timedelta, timezone
from typing import List, Optional

from spark.runid import RUN_FORMAT

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
    return utc(dt).strftime(RUN_FORMAT)


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


def utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def epoch_ms(dt: datetime) -> int:
    return int(round(utc(dt).timestamp() * 1000))


@functools.lru_cache(maxsize=4096)
def _parse_tstamp_ms(text: str) -> Optional[int]:
    try:
        return epoch_ms(datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f"))
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
