"""spark-submit entry script: `populate.py --spec <location>`; the job itself is spark.job.main.

Run as a script, this file's folder comes first on sys.path. When that folder is the `spark` package itself,
its modules (events, archive, job...) would be importable as top-level names and could shadow others, so the
folder is replaced by its parent, after --py-files zips and installed packages, as a fallback only.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.isfile(os.path.join(_HERE, "__init__.py")) and sys.path and \
        os.path.abspath(sys.path[0] or os.curdir) == _HERE:
    sys.path.pop(0)
    sys.path.append(os.path.dirname(_HERE))

from spark.job import main  # noqa: E402 - sys.path is settled first

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
