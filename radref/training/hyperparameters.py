"""Every hyperparameter of radref's models and training, in one table.

Each entry of :data:`HYPERPARAMETERS` is one :class:`Hyperparameter`: its name
(the estimators' constructor parameter), type and range, default, one line
of help, its command-line option, and whether a checkpoint must have been
written with the same value to be resumed (``resume``).  The idea is
scikit-learn's ``_parameter_constraints``: the constraints are data, checked
by one function (:func:`check_hyperparameter`), instead of one hand-written
check per parameter and per caller.

Who reads the table:

- the estimators (:mod:`radref.user.estimators`): their constructor
  signature, their docstring's parameter list, and the checks of ``fit``;
- the ``radref`` command (:mod:`radref.user.options`): the options of
  ``train`` and ``reproduce``, their help and defaults, and the checks of
  their values worded with the option (``--lr must be ...``);
- ``radref reproduce``: the defaults of a protocol (Adam's betas and eps);
- the training run (:mod:`radref.training.run`): the settings a checkpoint
  records by name, and the check that a checkpoint may be resumed.

Adding a training option is one entry here plus its use in
:class:`radref.training.run.TrainingSettings` (docs/index.md, "How to add").
"""
import math
from dataclasses import dataclass

import numpy as np

from radref.checks import (check_bool, check_choice, check_int, check_n_jobs, check_real,
                           described)


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter (a row of the table).

    Attributes
    ----------
    name : str
        The constructor parameter.
    type : {"int", "real", "bool", "choice", "n_jobs"}
        ``"n_jobs"``: scikit-learn's number of threads, a nonzero integer
        (:func:`radref.checks.check_n_jobs`).
    default : object
        The architecture's defaults are the model's (the layer kind's
        ``DEFAULT_ARCHITECTURE``, :mod:`radref.core.layers`); ``hidden`` has none here.
    help : str
        One line, for the docstring and the command line.
    low, high : float or None
        Bounds of the range (``None``: unbounded); ints have only ``low``.
    closed : str
        Which bounds belong to the range: ``"both"``, ``"left"``, ``"right"``
        or ``"neither"`` (ignored for ints, whose ``low`` is included).
    none : bool
        ``None`` is a valid value too (what it means is in ``help``).
    choices : tuple of str
        The valid values of a ``"choice"``.
    group : {"architecture", "seed", "training", "recipe", "evaluation"}
        ``"architecture"`` (the layer kind's ``DEFAULT_ARCHITECTURE`` says
        which of them a model takes) and ``"seed"``: recorded in a
        checkpoint's ``hyperparameters``; ``"recipe"``: the training beyond
        the paper's (off by default); ``"evaluation"``: how a fitted model
        computes (its results do not depend on it, nor does training).
    resume : bool
        A checkpoint written with another (effective) value is not resumed.
    option : str or None
        The command-line option (``""``: ``--name-with-dashes``; ``None``:
        none, ``cli_note`` says why).
    applies : tuple or None
        ``(other, value)``: the option does something only when the
        hyperparameter ``other`` is ``value`` (the command line refuses it
        otherwise).
    kinds : tuple of str or None
        Layer kinds whose models take it (``None``: every model).
    cli_note : str
        Why there is no option, or how the command line spells it.
    """

    name: str
    type: str
    default: object
    help: str
    low: float = None
    high: float = None
    closed: str = "both"
    none: bool = False
    choices: tuple = ()
    group: str = "training"
    resume: bool = False
    option: str = ""
    applies: tuple = None
    kinds: tuple = None
    cli_note: str = ""

    @property
    def flag(self):
        """The command-line option, ``--name-with-dashes`` unless spelled otherwise."""
        return ("--" + self.name.replace("_", "-")) if self.option == "" else self.option

    def range_text(self, label=None):
        """The valid values in words (``"a finite number > 0"``, ``"in [0, 1)"``)."""
        if self.type == "int":
            return f"an integer >= {self.low}"
        if self.type == "n_jobs":
            return "a nonzero integer"
        if self.type == "bool":
            return "True or False"
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.high is None:
            text = f"a finite number {'>=' if left else '>'} {self.low:g}"
        else:
            text = f"in {'[' if left else '('}{self.low:g}, {self.high:g}{']' if right else ')'}"
        # the command line has no None: an option left out is the default
        return "None or " + text if self.none and not _is_option(label) else text


def _is_option(label):
    return label is not None and label.startswith("-")


_SCHEDULE = "lr_schedule"

#: The table: architecture first, then the paper's training, then the recipe.
HYPERPARAMETERS = (
    # ---------------------------------------------------------- architecture
    Hyperparameter("n_layers", "int", 6, "coupling layers (paper: 6)", low=1,
                   group="architecture", option="--layers"),
    Hyperparameter("hidden", "int", None, "hidden units of each conditioner", low=1,
                   group="architecture"),
    Hyperparameter("gate_hidden", "int", None, "hidden units of each gating network "
                   "(None: hidden)", low=1, none=True, group="architecture", kinds=("rad",)),
    Hyperparameter("out_std", "real", 0.01, "standard deviation of the output weights at "
                   "initialisation", low=0.0, closed="left", group="architecture"),
    # ------------------------------------------------------ the paper's training
    Hyperparameter("steps", "int", 3000, "Adam steps in total (with warm_start or a "
                   "checkpoint: the total to reach)", low=1),
    Hyperparameter("batch_size", "int", 500, "minibatch size (a batch larger than the data is "
                   "the whole data)", low=1, resume=True),
    Hyperparameter("lr", "real", 5e-3, "Adam's learning rate", low=0.0, closed="right",
                   resume=True),
    Hyperparameter("beta1", "real", 0.9, "Adam's decay of the first moment", low=0.0,
                   high=1.0, closed="left", resume=True),
    Hyperparameter("beta2", "real", 0.999, "Adam's decay of the second moment", low=0.0,
                   high=1.0, closed="left", resume=True),
    Hyperparameter("eps", "real", 1e-8, "Adam's denominator constant", low=0.0,
                   closed="right", resume=True),
    Hyperparameter("eval_every", "int", 250, "steps between two scores of the held-out data "
                   "(and of the early-stopping split)", low=1),
    Hyperparameter("warm_start", "bool", False, "fit continues the fitted model (parameters "
                   "and Adam state) up to steps instead of starting afresh", option=None,
                   cli_note="a command-line run continues from --checkpoint instead"),
    Hyperparameter("progress", "bool", None, "progress display (None: on a terminal and in "
                   "Jupyter; True: also plain lines on stderr in a pipe or log file, for "
                   "scripts; False: none)", none=True,
                   option="--quiet", cli_note="--quiet is progress=False"),
    Hyperparameter("random_state", "int", None, "seeds initialisation, minibatch order and "
                   "the early-stopping split (None: fresh entropy)", low=0, none=True,
                   group="seed", option="--seed",
                   cli_note="--seed also seeds the points drawn from --problem"),
    # ------------------------------------------ the recipe beyond the paper's
    Hyperparameter(_SCHEDULE, "choice", "constant", "learning rate over the steps: constant "
                   "(the paper's), cosine decay to lr x lr_final_fraction at lr_decay_steps, "
                   "or step decay by lr_gamma every lr_step_size steps",
                   choices=("constant", "cosine", "step"), group="recipe", resume=True),
    Hyperparameter("lr_decay_steps", "int", None, "cosine: the step at which the decay ends "
                   "(None: steps; give the final steps when training in several runs)", low=1,
                   none=True, group="recipe", resume=True, applies=(_SCHEDULE, "cosine")),
    Hyperparameter("lr_final_fraction", "real", 0.0, "cosine: final rate as a fraction of lr",
                   low=0.0, high=1.0, group="recipe", resume=True,
                   applies=(_SCHEDULE, "cosine")),
    Hyperparameter("lr_step_size", "int", 1000, "step: steps between two decays", low=1,
                   group="recipe", resume=True, applies=(_SCHEDULE, "step")),
    Hyperparameter("lr_gamma", "real", 0.5, "step: factor of each decay", low=0.0, high=1.0,
                   closed="right", group="recipe", resume=True, applies=(_SCHEDULE, "step")),
    Hyperparameter("ema_decay", "real", None, "keep an exponential moving average of the "
                   "parameters with this decay (e.g. 0.999) and use it as the model (None: "
                   "the last iterate)", low=0.0, high=1.0, closed="neither", none=True,
                   group="recipe", resume=True),
    Hyperparameter("early_stopping", "bool", False, "set aside validation_fraction of the "
                   "training rows (never the held-out ones), score them every eval_every "
                   "steps, stop after n_iter_no_change scores without improvement and keep "
                   "the best parameters", group="recipe", resume=True),
    Hyperparameter("validation_fraction", "real", 0.1, "early stopping: fraction of the "
                   "training rows set aside", low=0.0, high=1.0, closed="neither",
                   group="recipe", resume=True, applies=("early_stopping", True)),
    Hyperparameter("n_iter_no_change", "int", 10, "early stopping: scores without "
                   "improvement before stopping", low=1, group="recipe", resume=True,
                   applies=("early_stopping", True)),
    # ------------------------------------------------- how a fitted model computes
    Hyperparameter("n_jobs", "n_jobs", None, "threads for score_samples, score, transform, "
                   "infer, inverse_transform and sample: chunks of rows in parallel, the "
                   "results bit for bit those of one thread (None: 1; -1: every CPU; -2: all "
                   "but one)", none=True, group="evaluation", option=None,
                   cli_note="radref score and radref sample take --jobs; training runs in "
                   "one thread"),
)

#: name -> entry
HYPERPARAMETER = {entry.name: entry for entry in HYPERPARAMETERS}
#: names of the entries a checkpoint must match to be resumed
RESUME_SETTINGS = tuple(entry.name for entry in HYPERPARAMETERS if entry.resume)


def defaults(group=None):
    """Name -> default of the entries (of one ``group``)."""
    return {e.name: e.default for e in HYPERPARAMETERS if group in (None, e.group)}


def check_hyperparameter(name, value, label=None):
    """``value`` checked against the entry ``name`` of the table, as a plain
    Python value.

    Parameters
    ----------
    name : str
        A name of :data:`HYPERPARAMETERS`.
    value : object
    label : str, optional
        What the messages call the value (default ``name``; the command line
        passes its option, ``"--lr"``, and then ``None`` is not offered).

    Raises
    ------
    TypeError
        A value of the wrong kind (``lr must be a real number, got str '1'``).
    ValueError
        A value out of range (``lr must be a finite number > 0, got 0.0``).
    """
    entry = HYPERPARAMETER[name]
    label = label or name
    if value is None and entry.none:
        return None
    if entry.type == "bool":
        if entry.none and label == name and not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{label} must be True, False or None, got {described(value)}")
        return check_bool(label, value)
    if entry.type == "choice":
        return check_choice(label, value, entry.choices)
    if entry.type == "int":
        return check_int(label, value, minimum=entry.low)
    if entry.type == "n_jobs":
        return check_n_jobs(label, value)
    value = check_real(label, value)
    if not _in_range(entry, value):
        raise ValueError(f"{label} must be {entry.range_text(label)}, got {value}")
    return value


def _in_range(entry, value):
    """Written so that NaN fails (every comparison with NaN is False)."""
    left, right = entry.closed in ("both", "left"), entry.closed in ("both", "right")
    above = value >= entry.low if left else value > entry.low
    if entry.high is None:
        return above and math.isfinite(value)
    return above and (value <= entry.high if right else value < entry.high)


def check_hyperparameters(values, label=None):
    """Every entry of ``values`` (name -> value) checked; returns the checked dict.
    ``label(name)`` gives each value's label (default: its name)."""
    return {name: check_hyperparameter(name, value, label(name) if label else None)
            for name, value in values.items()}
