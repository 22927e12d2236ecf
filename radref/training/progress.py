"""The training progress display: built in one place, the training loop
:func:`radref.training.train.train`, for :meth:`RadFlow.fit` and ``radref train`` alike.

Three forms, chosen by :func:`display_mode` where the run happens:

- on a terminal, one line on stderr redrawn in place: a carriage return,
  the new text, then ``ESC [ K`` (clear to the end of the line), so a
  shorter line leaves no characters of a longer one behind; the text is cut
  to the terminal's width so that it never wraps (a wrapped line cannot be
  redrawn);
- in a Jupyter notebook (an IPython kernel), one output of the cell updated
  in place (IPython's ``display(..., display_id=True)`` and
  ``handle.update``): a progress bar and the same text, never a scroll of
  lines;
- elsewhere (a log file, a pipe), plain lines on stderr: the first after
  :data:`FIRST_LINE_SECONDS`, then one at every tenth of the run, so that a
  log shows within a second that training has started, and a long run's log
  stays ten lines long.

Each starts with the model's name (``Rad``, ``Real NVP``), so that two runs
in one output are told apart, and shows the step, the smoothed training
log-likelihood, the latest held-out log-likelihood (if there is held-out
data), steps per second and the estimated time left.

This is what ``tqdm.auto``, the ecosystem's convention, does (a redrawn
line on a terminal, a widget in Jupyter, redraws at most every 0.1 s),
written here rather than imported because radref's only runtime dependency
is NumPy; and it differs where a log file is concerned: tqdm writes its
carriage-return redraws into the file, this writes whole lines.  The raw minibatch log-likelihood is too noisy to
read (it moves by nats from one batch to the next on a peaked density), so
the display shows its mean over the last :data:`SMOOTHING_STEPS` steps (all
the steps so far before that).  A window, not an exponential average: the
first steps on data far from the base distribution's scale score -1e8
nats, and an exponential average would carry them for thousands of steps.
"""
import collections
import html
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
#: the first plain line is written at the first step this many seconds in
FIRST_LINE_SECONDS = 1.0
#: shortest interval between two updates of a notebook's output, in seconds
#: (each update is a message from the kernel to the browser)
NOTEBOOK_REDRAW_SECONDS = 0.2
#: erase from the cursor to the end of the line (ANSI / ECMA-48 "EL")
CLEAR_TO_END = "\x1b[K"


def display_mode(progress, stream):
    """``"tty"``, ``"notebook"``, ``"lines"`` or ``None`` (silent) for the
    estimator's ``progress`` parameter and the stream it would write to.

    ``None`` (the default) draws on a terminal and in a Jupyter notebook and
    is silent elsewhere (a script's output sent to a file stays clean);
    ``True`` also writes plain lines to a pipe or a log file (for scripts);
    ``False`` is silent everywhere.
    """
    if progress is False:
        return None
    if hasattr(stream, "isatty") and stream.isatty():
        return "tty"
    if in_notebook() and stream is sys.stderr:  # not redirected by the user
        return "notebook"
    return "lines" if progress else None


def in_notebook():
    """Whether this code runs in a Jupyter kernel (a notebook, JupyterLab,
    VS Code's notebooks), the test ``tqdm.autonotebook`` uses: IPython's shell
    was started by an ``IPKernelApp`` (a terminal IPython was not)."""
    ipython = sys.modules.get("IPython")  # never imported here: a kernel has it
    shell = ipython.get_ipython() if hasattr(ipython, "get_ipython") else None
    config = getattr(shell, "config", None)
    try:
        return config is not None and "IPKernelApp" in config
    except TypeError:
        return False


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
    mode : {"tty", "notebook", "lines", None}
        See :func:`display_mode`.
    label : str, optional
        The model's name, the first word of every line (``"Rad"``).
    stream : file, optional
        Where to write (default ``sys.stderr``).
    clock : callable, optional
        Seconds, monotonic (injectable for tests).
    """

    def __init__(self, total, start=0, mode=None, stream=None, clock=time.monotonic,
                 label=None):
        self.total, self.start, self.mode, self.label = total, start, mode, label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.began = clock()
        self.smoothed = None
        self._window = collections.deque(maxlen=SMOOTHING_STEPS)
        self._last_draw = None
        self._drawn = False
        self._lines_written = 0
        self._handle = None  # the notebook output, made at the first draw
        span = max(total - start, 1)
        self._milestones = sorted({start + -(-span * i // LINES) for i in range(1, LINES + 1)})

    def update(self, step, loglik, val_loglik=None):
        """Record the minibatch log-likelihood of ``step``; draw if it is time."""
        self._window.append(loglik)
        # summed afresh each step: a running sum would keep the rounding of
        # the huge first values after they leave the window
        self.smoothed = sum(self._window) / len(self._window)
        if self.mode in ("tty", "notebook"):
            now = self.clock()
            interval = REDRAW_SECONDS if self.mode == "tty" else NOTEBOOK_REDRAW_SECONDS
            if (step == self.total or self._last_draw is None
                    or now - self._last_draw >= interval):
                self._last_draw = now
                text = self.describe(step, val_loglik, now)
                if self.mode == "tty":
                    self._redraw(text)
                else:
                    self._update_notebook(text, step)
        elif self.mode == "lines":
            now = self.clock()
            first = self._lines_written == 0 and now - self.began >= FIRST_LINE_SECONDS
            if step in self._milestones or first:
                self.stream.write(self.describe(step, val_loglik, now) + "\n")
                self.stream.flush()
                self._lines_written += 1

    def describe(self, step, val_loglik=None, now=None):
        """The text of the display at ``step``."""
        now = self.clock() if now is None else now
        done = step - self.start
        elapsed = now - self.began
        parts = [] if self.label is None else [self.label]
        parts += [f"step {step}/{self.total}", f"loglik {format_nats(self.smoothed)} (smoothed)"]
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

    def _update_notebook(self, text, step):
        from IPython.display import display  # in a kernel (in_notebook), IPython is there
        shown = NotebookLine(text, step - self.start, self.total - self.start)
        if self._handle is None:
            self._handle = display(shown, display_id=True)
        else:
            self._handle.update(shown)

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


class NotebookLine:
    """One state of the notebook display: a progress bar and the text of the
    terminal's line, as HTML, with the text alone for front ends without
    HTML."""

    def __init__(self, text, done, of):
        self.text, self.done, self.of = text, done, max(of, 1)

    def __repr__(self):
        return self.text

    def _repr_html_(self):
        return (f'<progress value="{self.done}" max="{self.of}" style="width: 10em; '
                f'vertical-align: middle"></progress> '
                f"<code>{html.escape(self.text)}</code>")
