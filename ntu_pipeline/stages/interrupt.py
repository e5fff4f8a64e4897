"""Ctrl-C that stops a run between samples, never inside compiled code.

    with deferred_interrupts():
        for sample in samples:
            check_interrupt()     # raises Interrupted once Ctrl-C was pressed
            ...

Why: Python raises KeyboardInterrupt at whatever bytecode runs when SIGINT arrives. Inside the numba
parser that happens while its result (a tuple of fresh arrays) is boxed, and an exception there
crashed the interpreter with SIGSEGV in 7 of 16 tries. So SIGINT only sets a flag, checked at points
where stopping is safe; a second Ctrl-C exits at once (the store resumes from that too, as from
kill -9). Worker processes ignore SIGINT: the terminal sends it to the whole process group, and the
parent alone decides how to stop (`ignore_interrupts` is their initializer).

Once a command has done its work and said so, `quiet_shutdown()` (cli/errors.py calls it) keeps a Ctrl-C
from interrupting the interpreter's exit, where it joins loky's (or dask's) threads: Python printed
"Exception ignored in: <module 'threading'> ... KeyboardInterrupt" over the finished run. There a first
Ctrl-C is ignored (the exit takes under a second), a second exits at once, quietly, with status 130.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import Interrupted

MESSAGE = "interrupted; rerun the same command to resume"
_requested = threading.Event()
_pressed_at_shutdown = threading.Event()


def _on_sigint(signum, frame) -> None:
    if _requested.is_set():  # the second Ctrl-C: the user wants out now
        sys.stderr.write(f"\n{MESSAGE}\n")
        sys.stderr.flush()
        os._exit(130)
    _requested.set()


def _at_shutdown(signum, frame) -> None:
    if _pressed_at_shutdown.is_set():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)
    _pressed_at_shutdown.set()


def quiet_shutdown() -> None:
    """From now on Ctrl-C never raises (see the module docstring); main thread only, else a no-op."""
    if threading.current_thread() is threading.main_thread():
        _pressed_at_shutdown.clear()
        signal.signal(signal.SIGINT, _at_shutdown)


def check_interrupt() -> None:
    """Raise Interrupted if Ctrl-C was pressed (in the process that installed the handler)."""
    if _requested.is_set():
        raise Interrupted(MESSAGE)


def ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """SIGINT sets a flag for the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


@contextmanager
def children_ignore_interrupts() -> Iterator[None]:
    """Processes started inside the block inherit SIGINT ignored (CPython keeps an inherited SIG_IGN)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
