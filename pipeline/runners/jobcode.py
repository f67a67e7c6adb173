"""The job code both runners submit: one entry script, one zip of the `spark` package, one argument list.

The local runner and the EMR step build their commands from the same pieces here, so a batch runs the same
entry with the same arguments wherever it runs. The job's only argument is the location of its batch spec.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from typing import Dict, List, Optional, Tuple

ENTRY_NAME = "populate.py"
ZIP_PREFIX = "spark"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold: same code, same bytes


def package_dir() -> str:
    import spark

    return os.path.dirname(os.path.abspath(spark.__file__))


def entry_script() -> str:
    """Path of the installed `spark/populate.py`, the job's entry point."""
    return os.path.join(package_dir(), ENTRY_NAME)


def job_arguments(spec_uri: str) -> List[str]:
    """The job's whole command line: everything else travels inside the spec."""
    return ["--spec", spec_uri]


def _sources(root: str) -> List[Tuple[str, str]]:
    """(name inside the package, absolute path) of every .py file, sorted, caches skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in filenames:
            if name.endswith(".py"):
                full = os.path.join(dirpath, name)
                found.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    return sorted(found)


def code_hash(root: Optional[str] = None) -> str:
    """sha256 over the names and contents of the package's .py files (the entry script included)."""
    digest = hashlib.sha256()
    for name, full in _sources(root or package_dir()):
        with open(full, "rb") as f:
            data = f.read()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def zip_name(digest: str) -> str:
    return f"{ZIP_PREFIX}-{digest[:12]}.zip"


def build_job_zip(dest_dir: str, root: Optional[str] = None) -> str:
    """Zip the package for `--py-files`; identical code gives identical bytes and the same name."""
    root = root or package_dir()
    path = os.path.join(dest_dir, zip_name(code_hash(root)))
    tmp = f"{path}.tmp-{os.getpid()}"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, full in _sources(root):
            info = zipfile.ZipInfo(f"{ZIP_PREFIX}/{name}", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(full, "rb") as f:
                zf.writestr(info, f.read())
    os.replace(tmp, path)
    return path


def _submit_tail(zip_location: str, entry_location: str, spec_uri: str) -> List[str]:
    return ["--py-files", zip_location, entry_location, *job_arguments(spec_uri)]


def local_command(spark_submit: str, master: str, zip_path: str, spec_uri: str, conf: Dict[str, str]) -> List[str]:
    """The local runner's spark-submit command line."""
    conf_args = [arg for key in sorted(conf) for arg in ("--conf", f"{key}={conf[key]}")]
    return [spark_submit, "--master", master, *conf_args, *_submit_tail(zip_path, entry_script(), spec_uri)]


def emr_step_args(zip_uri: str, entry_uri: str, spec_uri: str, extra: List[str]) -> List[str]:
    """The EMR step's command-runner.jar arguments: the same tail as the local command, from S3."""
    return ["spark-submit", "--deploy-mode", "cluster", *extra, *_submit_tail(zip_uri, entry_uri, spec_uri)]
