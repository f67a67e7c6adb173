"""What the enriched archive holds, from as few listings as S3 allows.

The run folders come from one delimited listing (1,000 runs a request); the objects of the runs to do from one
recursive listing that starts at the first of them (1,000 objects a request), not one listing per run: an archive
of thousands of small hourly runs is planned in a handful of requests.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from pipeline.rules.sizing import events_from_bytes
from spark import storage
from spark.archive import UNREADABLE_STORAGE_CLASSES, archived_objects, data_objects
from spark.runid import RUN_PREFIX, folder_name, run_of_folder
from spark.storage import Location, ObjectInfo


@dataclass
class RunObjects:
    objects: List[ObjectInfo] = field(default_factory=list)  # data objects only
    unreadable: List[str] = field(default_factory=list)  # GLACIER or DEEP_ARCHIVE objects that are not restored

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def events(self) -> int:
        """Estimated from the objects' names and sizes (sizing.events_from_bytes)."""
        return events_from_bytes((o.name, o.size) for o in self.objects)


def enumerate_runs(archive: Location, client=None) -> Tuple[List[str], List[Dict[str, str]]]:
    """All run ids in the archive, oldest first, and the folders skipped with the reason why."""
    found, skipped = [], []
    for name in storage.list_children(archive, client):
        run = run_of_folder(name)
        if run is None:
            skipped.append({"run": name, "reason": "not a run folder (expected run=YYYY-MM-DD-HH-MM-SS)"})
        else:
            found.append(run)
    return sorted(found), skipped


def survey_runs(archive: Location, run_ids: Sequence[str], client=None, check_restores: bool = False
                ) -> Dict[str, RunObjects]:
    """The data objects of `run_ids` from one listing starting at the first of them. With `check_restores`, S3
    objects in an archive storage class are checked for a restore, as the job does (one HEAD each)."""
    wanted = set(run_ids)
    out: Dict[str, RunObjects] = {run: RunObjects() for run in run_ids}
    if not wanted:
        return out
    by_run: Dict[str, List[ObjectInfo]] = defaultdict(list)
    first = folder_name(min(wanted))
    for obj in storage.list_objects(archive, client, start_after=first[:-1]):
        folder, _, name = obj.name.partition("/")
        run = folder[len(RUN_PREFIX):] if folder.startswith(RUN_PREFIX) else None
        if run in wanted and name:
            by_run[run].append(ObjectInfo(name, obj.size, obj.storage_class))
    for run in run_ids:
        data = data_objects(by_run.get(run, []))
        if check_restores and archive.is_s3:
            unreadable = archived_objects(archive.child(folder_name(run)), data, client)
        elif check_restores:
            unreadable = [o.name for o in data if o.storage_class in UNREADABLE_STORAGE_CLASSES]
        else:
            unreadable = []
        out[run] = RunObjects(data, unreadable)
    return out


def unreadable_reason(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"unreadable storage class: {shown} (GLACIER or DEEP_ARCHIVE: restore them first)"
