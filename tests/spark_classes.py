"""One class-data-sharing (AppCDS) archive of the classes a Spark job loads, for every JVM the tests start.

Each spark-submit starts two JVMs (the launcher, then the driver), and the suite runs dozens of jobs: loading and
verifying Spark's classes is most of a small job's CPU. The archive is dumped once per Java, pyspark and Python
(a first job run with -XX:ArchiveClassesAtExit), then every later JVM maps it (-XX:SharedArchiveFile): about a
third less CPU and wall time per job here. Only the tests do this; a JVM that cannot use the archive (another Java)
says so in a warning and loads its classes as usual.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import pyspark

# A job of the shapes the populator's has: Python tasks, a shuffle, a persisted RDD.
_WARM_UP = """
from pyspark import StorageLevel
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
rdd = spark.sparkContext.parallelize(range(1000), 2).map(lambda x: (x % 7, x)).persist(StorageLevel.MEMORY_AND_DISK)
rdd.filter(lambda kv: kv[0] == 1).count()
rdd.reduceByKey(lambda a, b: a + b, 2).collect()
spark.stop()
"""


def archive_path() -> Path:
    """Where the archive of this Java, pyspark and Python lives (dumped once per machine and versions)."""
    java = shutil.which("java") or ""
    try:
        version = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        version = ""
    key = hashlib.sha1(f"{version}|{pyspark.__version__}|{sys.executable}".encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "manifest-populator-cds" / f"spark-{key}.jsa"


def ensure_archive(jvm_options: str) -> Optional[Path]:
    """The archive, dumped now if missing (by one Spark job with `jvm_options`); None when it cannot be made."""
    path = archive_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    script = path.parent / f"warm-up-{os.getpid()}.py"
    script.write_text(_WARM_UP)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable,
               SPARK_SUBMIT_OPTS=f"{jvm_options} -XX:ArchiveClassesAtExit={partial}")
    spark_submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    try:
        subprocess.run([spark_submit, "--master", "local[2]", str(script)], env=env, capture_output=True,
                       timeout=300, check=True)
        os.replace(partial, path)  # whole, or not at all: a JVM never maps half an archive
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        script.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return path
