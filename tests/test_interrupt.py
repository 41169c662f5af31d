"""A Ctrl-C that Python swallows (raised inside a garbage-collection callback) still stops a run:
lfads_core.interrupt records it and raises it again at the next check."""

from __future__ import annotations

import signal

import pytest

from lfads_core import interrupt


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_check(monkeypatch):
    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupt.install()
        assert signal.getsignal(signal.SIGINT) is interrupt._handler
        interrupt.check()  # nothing pressed: nothing raised
        try:  # what Python does with it inside a weakref callback: print and drop it
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        interrupt.install()  # a new command starts clean
        interrupt.check()
    finally:
        signal.signal(signal.SIGINT, previous)
