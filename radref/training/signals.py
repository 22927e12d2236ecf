"""SIGTERM, handled like Ctrl-C.

``kill PID`` (SIGTERM) is how schedulers, ``timeout`` and service managers ask
a program to stop.  By default Python dies on it at once, running no
``finally`` block: a temporary file stays behind and nothing is saved.  The
``radref`` command therefore turns SIGTERM into an exception,
:class:`Terminated` (a ``KeyboardInterrupt``, as Ctrl-C is), for as long as
it runs (:func:`sigterm_raises`): every ``finally`` block and every
:func:`radref.training.files.atomic_write` cleans up, training saves its
state as on Ctrl-C, and the command exits with status :data:`EXIT_TERMINATED`
(128 + 15, as shells report a process ended by SIGTERM).
"""
import contextlib
import signal
import threading

#: exit status after SIGTERM
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while :func:`sigterm_raises` was in effect."""


def raise_terminated(signum, frame):
    """The SIGTERM handler of :func:`sigterm_raises`."""
    raise Terminated("terminated by SIGTERM")


#: radref's SIGTERM handlers say so: training may defer them (below)
raise_terminated.radref_defers = True


def defers_sigterm(handler):
    """Whether training may take SIGTERM over from ``handler`` (to stop after
    the step under way and save its state): Python's default, or one of
    radref's own handlers (marked ``radref_defers``), never a handler the
    program installed."""
    return handler is signal.SIG_DFL or getattr(handler, "radref_defers", False)


@contextlib.contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread
    (elsewhere, or with a handler the program installed, nothing changes)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, raise_terminated)):
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
