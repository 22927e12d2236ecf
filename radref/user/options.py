"""Command-line options from the one table of hyperparameters
(:mod:`radref.training.hyperparameters`).

``radref train`` and ``radref reproduce`` build their hyperparameter options
here: each option is the table entry's ``flag`` (``--lr``, ``--layers``), its
help is the entry's help with its default, and its value is checked by the
table's check worded with the option (``--lr must be a finite number > 0``),
raising :class:`OptionError`.

The training recipe beyond the paper's (the table's ``"recipe"`` group) is
written as a dict holding only what differs from the paper's training and
applies to the chosen options (:func:`recipe_from_args`), so that the paper
protocol of ``radref reproduce`` keeps its hash and two spellings of one
recipe get one hash.
"""
from radref.training.hyperparameters import HYPERPARAMETER, HYPERPARAMETERS, check_hyperparameter

#: the recipe's entries, in the table's order
RECIPE = tuple(e.name for e in HYPERPARAMETERS if e.group == "recipe")
#: options that apply only to one learning-rate schedule (option -> schedule)
SCHEDULE_OPTIONS = {e.name: e.applies[1] for e in HYPERPARAMETERS
                    if e.applies and e.applies[0] == "lr_schedule"}


class OptionError(ValueError):
    """An option is wrong or does not apply (a one-line message)."""


def flag(name):
    """The command-line option of the hyperparameter ``name``."""
    return HYPERPARAMETER[name].flag


def check_option(name, value):
    """``value`` of the option of hyperparameter ``name``, checked by the
    table (the message names the option); ``None`` (not given) passes."""
    if value is None:
        return None
    try:
        return check_hyperparameter(name, value, label=flag(name))
    except (TypeError, ValueError) as exc:
        raise OptionError(str(exc)) from None


def cli_help(name):
    """The table's help of hyperparameter ``name`` as the command line says it:
    what Python spells ``None`` is the option's default when left out."""
    return HYPERPARAMETER[name].help.replace("(None: ", "(default: ")


def add_options(parser, names, defaults=True, nargs=None, suffix="", default_text=None):
    """Add the options of the hyperparameters ``names`` to an ``argparse``
    parser (or group).  ``defaults``: the option's default is the table's
    (else ``None``: not given); ``nargs`` for sweeps; ``suffix`` is appended to
    every help; ``default_text`` maps a name to its help's default."""
    for name in names:
        entry = HYPERPARAMETER[name]
        shown = (default_text or {}).get(name)
        if shown is None and not (entry.default is None and "(None: " in entry.help):
            shown = f"default {entry.default!r}".replace("'", "")
        # an option whose table help says what leaving it out means states
        # its default there, once
        help_text = f"{cli_help(name)}{suffix}" + ("" if shown is None else f" ({shown})")
        if entry.type == "bool":
            parser.add_argument(entry.flag, dest=name, action="store_true", help=help_text)
            continue
        integer = entry.type in ("int", "n_jobs")
        kwargs = dict(choices=entry.choices) if entry.type == "choice" else dict(
            type=int if integer else float, metavar="N" if integer else "X")
        parser.add_argument(entry.flag, dest=name, nargs=nargs, help=help_text,
                            default=entry.default if defaults else None, **kwargs)


def add_recipe_arguments(parser, decay_steps=False):
    """Add the recipe's options to an ``argparse`` parser.  ``decay_steps``:
    also ``--lr-decay-steps`` (for ``radref train``, which may be resumed
    with more steps; ``reproduce`` decays over its protocol's steps)."""
    group = parser.add_argument_group(
        "training recipe beyond the paper's (default: the paper's; docs/results.md measures it)")
    names = [n for n in RECIPE if decay_steps or n != "lr_decay_steps"]
    add_options(group, names, defaults=False,
                default_text={"lr_schedule": "default constant",
                              "early_stopping": "default: off"})
    group.set_defaults(lr_schedule="constant")


def recipe_from_args(args):
    """The recipe of parsed options: the hyperparameters that differ from the
    paper's training, checked.

    Returns
    -------
    dict
        ``{}`` for the paper's training; else the recipe's options that are
        not their default (``lr_schedule``, ``ema_decay``,
        ``early_stopping``) and every option that applies to them (those of
        the chosen schedule, those of early stopping), defaults filled in
        (except ``lr_decay_steps``, whose default is the fit's steps).

    Raises
    ------
    OptionError
        An option is out of range, or applies to a schedule or to early
        stopping that was not chosen.
    """
    recipe = {}
    for name in RECIPE:
        entry, value = HYPERPARAMETER[name], getattr(args, name, None)
        if entry.applies is None:
            if value is not None and value != entry.default:
                recipe[name] = value
            continue
        other, wanted = entry.applies
        if getattr(args, other) != wanted:
            if value is not None:
                where = (f"with {flag(other)}" if wanted is True
                         else f"to {flag(other)} {wanted}")
                raise OptionError(f"{flag(name)} applies {where} only")
            continue
        value = entry.default if value is None else value
        if value is not None:
            recipe[name] = value
    return check_recipe(recipe)


def check_recipe(recipe):
    """``recipe`` with every value checked (the message names the option); returns it."""
    return {name: check_option(name, value) for name, value in recipe.items()}


def describe_recipe(recipe):
    """One line for a recipe (``"the paper's"`` when empty)."""
    if not recipe:
        return "the paper's (constant rate, last iterate)"
    parts = []
    if "lr_schedule" in recipe:
        details = ", ".join(f"{key} {recipe[key]:g}" for key in SCHEDULE_OPTIONS if key in recipe)
        parts.append(f"{recipe['lr_schedule']} rate ({details})")
    if "ema_decay" in recipe:
        parts.append(f"EMA {recipe['ema_decay']:g}")
    if recipe.get("early_stopping"):
        parts.append(f"early stopping (validation fraction {recipe['validation_fraction']:g}, "
                     f"patience {recipe['n_iter_no_change']})")
    return ", ".join(parts)
