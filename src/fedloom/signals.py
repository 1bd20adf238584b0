"""SIGTERM and SIGHUP end a fedloom process the way Ctrl-C does: through the normal exception path, so the
run folder gets its FAILED marker, worker processes are stopped, the folder lock is released and temporary
files are removed — instead of dying mid-write with whatever the default action leaves behind."""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Iterator, Optional

#: Signals turned into :class:`Terminated`.
HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM or SIGHUP (a KeyboardInterrupt, so every
    cleanup path written for Ctrl-C runs for these too)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: Optional[FrameType]) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def termination_handlers() -> Iterator[None]:
    """SIGTERM/SIGHUP raise :class:`Terminated` inside the block; the previous handlers come back after it.
    Only the main thread may install handlers; elsewhere (a library call from a thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_terminated) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_status(exc: KeyboardInterrupt) -> int:
    """128 + the signal number, as a shell reports a process ended by that signal."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
