"""Ctrl-C that cannot be lost.

Python raises ``KeyboardInterrupt`` wherever the main thread is when SIGINT arrives; inside a
garbage-collection or weakref callback it is printed ("Exception ignored in ...") and dropped,
and a training run would then go on to its end and exit 0. The handler of :func:`install` also
records the request, and :func:`check` (called at the end of each epoch and before the outputs
are written) raises it again.
"""

from __future__ import annotations

import signal
import threading

_requested = False


def _handler(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT with :func:`_handler` (main thread only; elsewhere nothing changes)."""
    global _requested
    _requested = False
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed since :func:`install`, even if the
    exception it raised then was swallowed."""
    if _requested:
        raise KeyboardInterrupt
