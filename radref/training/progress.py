"""The training progress display: built in one place, the training loop
:func:`radref.training.train.train`, for :meth:`RadFlow.fit` and ``radref train`` alike.

Two forms, both on stderr:

- on a terminal, one line redrawn in place: a carriage return, the new text,
  then ``ESC [ K`` (clear to the end of the line), so a shorter line leaves
  no characters of a longer one behind; the text is cut to the terminal's
  width so that it never wraps (a wrapped line cannot be redrawn);
- elsewhere (a log file, a pipe), plain lines, one at every tenth of the run.

Each shows the step, the smoothed training log-likelihood, the latest
held-out log-likelihood (if there is held-out data), steps per second and
the estimated time left.  The raw minibatch log-likelihood is too noisy to
read (it moves by nats from one batch to the next on a peaked density), so
the display shows its mean over the last :data:`SMOOTHING_STEPS` steps (all
the steps so far before that).  A window, not an exponential average: the
first steps on data far from the base distribution's scale score -1e8
nats, and an exponential average would carry them for thousands of steps.
"""
import collections
import os
import shutil
import sys
import time

#: steps in the window of the displayed mean log-likelihood
SMOOTHING_STEPS = 100
#: shortest interval between two redraws on a terminal, in seconds
REDRAW_SECONDS = 0.1
#: plain lines are written at every 1/LINES of the run
LINES = 10
#: erase from the cursor to the end of the line (ANSI / ECMA-48 "EL")
CLEAR_TO_END = "\x1b[K"


def display_mode(progress, stream):
    """``"tty"``, ``"lines"`` or ``None`` (silent) for the estimator's
    ``progress`` parameter: ``None`` draws only on a terminal, ``True`` draws
    on a terminal and writes plain lines elsewhere, ``False`` is silent."""
    if progress is False:
        return None
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    if is_tty:
        return "tty"
    return "lines" if progress else None


def format_duration(seconds):
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _terminal_width(stream):
    """Columns of the terminal ``stream`` writes to (``shutil`` asks stdout's,
    which may be redirected while stderr is the terminal)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    # a pseudo-terminal nobody has sized reports 0 columns
    return columns if columns > 0 else shutil.get_terminal_size(fallback=(80, 24)).columns


class TrainingProgress:
    """Progress of one training run, from step ``start + 1`` to ``total``.

    Parameters
    ----------
    total : int
        Last step of the run.
    start : int
        Steps already done (a resumed or continued run).
    mode : {"tty", "lines", None}
        See :func:`display_mode`.
    stream : file, optional
        Where to write (default ``sys.stderr``).
    clock : callable, optional
        Seconds, monotonic (injectable for tests).
    """

    def __init__(self, total, start=0, mode=None, stream=None, clock=time.monotonic):
        self.total, self.start, self.mode = total, start, mode
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.began = clock()
        self.smoothed = None
        self._window = collections.deque(maxlen=SMOOTHING_STEPS)
        self._last_draw = None
        self._drawn = False
        span = max(total - start, 1)
        self._milestones = sorted({start + -(-span * i // LINES) for i in range(1, LINES + 1)})

    def update(self, step, loglik, val_loglik=None):
        """Record the minibatch log-likelihood of ``step``; draw if it is time."""
        self._window.append(loglik)
        # summed afresh each step: a running sum would keep the rounding of
        # the huge first values after they leave the window
        self.smoothed = sum(self._window) / len(self._window)
        if self.mode == "tty":
            now = self.clock()
            if (step == self.total or self._last_draw is None
                    or now - self._last_draw >= REDRAW_SECONDS):
                self._last_draw = now
                self._redraw(self.describe(step, val_loglik, now))
        elif self.mode == "lines" and step in self._milestones:
            self.stream.write(self.describe(step, val_loglik, self.clock()) + "\n")
            self.stream.flush()

    def describe(self, step, val_loglik=None, now=None):
        """The text of the display at ``step``."""
        now = self.clock() if now is None else now
        done = step - self.start
        elapsed = now - self.began
        parts = [f"step {step}/{self.total}", f"loglik {format_nats(self.smoothed)} (smoothed)"]
        if val_loglik is not None:
            parts.append(f"held-out {format_nats(val_loglik)}")
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.0f} steps/s" if rate >= 10 else f"{rate:.2f} steps/s")
            parts.append(f"ETA {format_duration((self.total - step) / rate)}")
        return "  ".join(parts)

    def _redraw(self, text):
        width = _terminal_width(self.stream)
        self.stream.write("\r" + text[:max(width - 1, 1)] + CLEAR_TO_END)
        self.stream.flush()
        self._drawn = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def close(self):
        """End the redrawn line (nothing to do for plain lines)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def format_nats(value):
    """A log-likelihood for the progress line: 4 decimals, or 4 significant
    digits in exponent form beyond 1e6 (a diverging run's -7e21)."""
    return f"{value:+.4f}" if abs(value) < 1e6 else f"{value:+.4e}"
