"""The clean and verify records beside the populate markers, under <markers>/<dynamodbTable>/.

- `_clean/run=<id>.json`: the run's items are deleted and its populate marker is removed (the clean report is
  inside). Written only after both, and deleted before the run is written again, so it always means "cleaned,
  nothing written for it since".
- `_verify/run=<id>.json`: the run's latest verification (the verify report, and the populate marker's time).
"""
from __future__ import annotations

from typing import Iterable, Optional

from .markers import MarkerStore

CLEAN_FOLDER, VERIFY_FOLDER = "_clean", "_verify"


def cleaned_store(store: MarkerStore) -> MarkerStore:
    """The `_clean/run=<id>.json` records, as a marker store of their own."""
    return MarkerStore(store.folder, CLEAN_FOLDER, client=store.client)


def verified_store(store: MarkerStore) -> MarkerStore:
    return MarkerStore(store.folder, VERIFY_FOLDER, client=store.client)


def forget_cleaned(store: MarkerStore, run_ids: Iterable[str]) -> None:
    """Before a run's items are written again: it is no longer cleaned (one listing, a delete per record)."""
    cleaned = cleaned_store(store)
    recorded = cleaned.done_runs()
    for run in run_ids:
        if run in recorded:
            cleaned.unmark(run)


def is_cleaned(store: MarkerStore, run_ids: Iterable[str], cached: bool = False) -> bool:
    """Cleaned and not written since: a clean record and no populate marker (one listing of each folder)."""
    marked, cleaned = store.done_runs(cached=cached), cleaned_store(store).done_runs(cached=cached)
    return all(r in cleaned and r not in marked for r in run_ids)


def verification(store: MarkerStore, run: str) -> dict:
    """The run's latest verify report ({} when it has none)."""
    records = verified_store(store)
    return (records.read_json(records.marker(run)) or {}).get("report", {})


def recorded_by(store: MarkerStore, run: str, batch_id: str) -> bool:
    return verification(store, run).get("batch_id") == batch_id


def missing_of(report: dict) -> int:
    counts = report.get("counts", {})
    return counts.get("missing", 0) + counts.get("later_etl_time", 0)


def passed_since_marked(store: MarkerStore, run: str, sample: int, seed: int,
                        marker: Optional[dict] = None) -> bool:
    """Whether the run's last verification found everything, with these settings, on the current populate."""
    rep = verification(store, run)
    marker = marker if marker is not None else store.read_json(store.marker(run))
    if not rep or not marker:
        return False
    drawn = rep.get("sample") or {"size": 0, "seed": 0}
    return (rep.get("populate_marked_at") == marker.get("marked_at") and not missing_of(rep)
            and (drawn["size"], drawn["seed"] if drawn["size"] else 0) == (sample, seed if sample else 0))
