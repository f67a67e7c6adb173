"""What the `luigi` command prints and how it exits, set up once when `luigi --module pipeline` imports us.

A user's mistake is one clear line, not a traceback: a PipelineError's log record becomes its message alone, and
each such message is repeated as the command's very last lines. Exit codes are luigi.cfg's [retcode] even when
no luigi.cfg is found, and our loggers (manifest.*) print like Luigi's.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import sys

import luigi.configuration
from luigi.retcodes import retcode

from pipeline.orchestration.backfill import NotStarted
from pipeline.rules.errors import PipelineError

from .scheduler import is_luigi_command

# Luigi logs task failures with the exception attached, and scheduling failures (errors in requires/complete)
# with the traceback pasted into the message.
_LAST_LINE = re.compile(r"^(?:pipeline|spark)\.[\w.]*\.[A-Z]\w*: (.*)$")  # an exception of ours, by its dotted path


class _OneLineErrors(logging.Filter):
    """Turns a PipelineError's log record into its message alone, and repeats it as the very last line."""

    def __init__(self):
        super().__init__()
        self.messages = []
        self.stopped_by = 0  # the signal that stopped the command (Ctrl-C's SIGINT, or SIGTERM), if one did

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = str(exc) if isinstance(exc, PipelineError) else None
        if message is None and isinstance(record.msg, str) and record.msg.startswith("Will not run"):
            lines = [ln.strip() for ln in record.msg.splitlines() if ln.strip()]
            match = _LAST_LINE.match(lines[-1]) if lines else None
            message = match.group(1) if match else None
        if message is not None:
            record.msg, record.args, record.exc_info, record.exc_text = message, (), None, None
            record.levelno, record.levelname = logging.ERROR, "ERROR"
            if message not in self.messages and not isinstance(exc, NotStarted):  # a consequence, not a cause
                self.messages.append(message)
        return True

    def repeat_at_exit(self) -> None:
        """The messages, last; a stopped command then exits as a shell reports a signal's stop (128 + signal),
        whatever Python would make of the interrupt."""
        for message in self.messages:
            print(f"ERROR: {message}", file=sys.stderr, flush=True)
        if self.stopped_by:
            sys.stdout.flush()
            os._exit(128 + self.stopped_by)


# The same codes as luigi.cfg's [retcode], for runs from a folder without that file: luigi builds its (cached)
# retcode config before importing this module, so unset codes are filled on that very instance.
RETCODES = {"already_running": 10, "missing_data": 20, "not_run": 25, "task_failed": 30, "scheduling_error": 35,
            "unhandled_exception": 40}


def _default_retcodes() -> None:
    codes = retcode()
    for name, value in RETCODES.items():
        if not getattr(codes, name):
            setattr(codes, name, value)


def _default_worker_settings() -> None:
    """Luigi re-checks a task's dependencies just before running it, in the process that runs it. Ours need not be:
    luigid hands out a batch only once its dependencies are done (perhaps by another process, whose validation
    and enumeration tasks this process never ran), and each batch re-checks its runs under their leases. luigi.cfg
    says so too; this holds without it."""
    config = luigi.configuration.get_config()
    if not config.has_option("worker", "check_unfulfilled_deps"):
        if not config.has_section("worker"):
            config.add_section("worker")
        config.set("worker", "check_unfulfilled_deps", "false")


def _show_our_logs() -> None:
    """Luigi configures only its own logger; ours (manifest.*) print the same way, to stderr."""
    ours = logging.getLogger("manifest")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where the command is: Luigi lets a KeyboardInterrupt through every task, so the command
    ends as after Ctrl-C (its job killed, its leases released, its summary kept, staged secrets deleted)."""


def _stop(signum: int, frame) -> None:
    raise Stopped()


def _stopped_in_one_line(kind, value, tb) -> None:
    """Ctrl-C or SIGTERM is the operator's own doing: said in one line, the command's last, not as a traceback."""
    if not issubclass(kind, KeyboardInterrupt):
        return sys.__excepthook__(kind, value, tb)
    stopped = issubclass(kind, Stopped)
    ONE_LINE_ERRORS.stopped_by = signal.SIGTERM if stopped else signal.SIGINT
    ONE_LINE_ERRORS.messages.append(f"stopped by {'SIGTERM' if stopped else 'Ctrl-C'}: runs not marked are done by "
                                    "running the same command again")


def _ends_quietly_when_stopped() -> None:
    """For the `luigi` command only (a test or a program importing us keeps its own signals and hooks)."""
    if is_luigi_command(sys.argv[0]) and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop)
        sys.excepthook = _stopped_in_one_line


_default_retcodes()
_default_worker_settings()
_show_our_logs()
ONE_LINE_ERRORS = _OneLineErrors()  # the messages the command repeats as its last lines
logging.getLogger("luigi-interface").addFilter(ONE_LINE_ERRORS)
atexit.register(ONE_LINE_ERRORS.repeat_at_exit)
_ends_quietly_when_stopped()

