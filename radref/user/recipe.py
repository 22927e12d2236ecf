"""The training recipe beyond the paper's, as command-line options.

``radref train`` and ``radref reproduce`` share these options; each maps to
the estimators' constructor parameter of the same name (``--lr-schedule`` to
``lr_schedule``, ...), documented in :class:`radref.user.estimators.RadFlow`.  Without any of
them, training is the paper's: a constant learning rate, the last iterate,
no validation split.

A recipe is written as a dict holding only what differs from the paper's
training and matters for the chosen options (:func:`recipe_from_args`), so
that the paper protocol of ``radref reproduce`` keeps its hash and two
spellings of one recipe get one hash.
"""
from radref.user.estimators import RECIPE_DEFAULTS, RadFlow

#: options that apply only to one learning-rate schedule (option -> schedule);
#: ``lr_decay_steps`` (``radref train`` only) has no default value of its own
SCHEDULE_OPTIONS = {"lr_final_fraction": "cosine", "lr_decay_steps": "cosine",
                    "lr_step_size": "step", "lr_gamma": "step"}
#: options that apply only with --early-stopping
STOPPING_OPTIONS = ("validation_fraction", "n_iter_no_change")


class RecipeError(ValueError):
    """An option of the recipe is wrong or does not apply (a one-line message)."""


def add_recipe_arguments(parser, decay_steps=False):
    """Add the recipe's options to an ``argparse`` parser.  ``decay_steps``:
    also ``--lr-decay-steps`` (for ``radref train``, which may be resumed
    with more steps; ``reproduce`` decays over its protocol's steps)."""
    group = parser.add_argument_group(
        "training recipe beyond the paper's (default: the paper's; docs/results.md measures it)")
    group.add_argument("--lr-schedule", choices=("constant", "cosine", "step"),
                       default="constant",
                       help="learning rate over the steps: constant (the paper's), cosine "
                            "decay from --lr to --lr x --lr-final-fraction at the last step, "
                            "or step decay by --lr-gamma every --lr-step-size steps")
    group.add_argument("--lr-final-fraction", type=float, metavar="F",
                       help=f"cosine: final rate as a fraction of --lr "
                            f"(default {RECIPE_DEFAULTS['lr_final_fraction']:g})")
    if decay_steps:
        group.add_argument("--lr-decay-steps", type=int, metavar="N",
                           help="cosine: the step at which the decay ends (default: --steps; "
                                "give the final --steps when training in several runs "
                                "resumed from --checkpoint)")
    group.add_argument("--lr-step-size", type=int, metavar="N",
                       help=f"step: steps between decays "
                            f"(default {RECIPE_DEFAULTS['lr_step_size']})")
    group.add_argument("--lr-gamma", type=float, metavar="G",
                       help=f"step: factor of each decay (default {RECIPE_DEFAULTS['lr_gamma']:g})")
    group.add_argument("--ema-decay", type=float, metavar="D",
                       help="keep an exponential moving average of the parameters with this "
                            "decay in (0, 1), e.g. 0.999, and use it as the model")
    group.add_argument("--early-stopping", action="store_true",
                       help="set aside --validation-fraction of the training points (never "
                            "the held-out ones), score them every --eval-every steps, stop "
                            "after --n-iter-no-change scores without improvement and keep "
                            "the best parameters")
    group.add_argument("--validation-fraction", type=float, metavar="F",
                       help=f"early stopping: fraction of the training points set aside "
                            f"(default {RECIPE_DEFAULTS['validation_fraction']:g})")
    group.add_argument("--n-iter-no-change", type=int, metavar="N",
                       help=f"early stopping: scores without improvement before stopping "
                            f"(default {RECIPE_DEFAULTS['n_iter_no_change']})")


def _option(name):
    return "--" + name.replace("_", "-")


def recipe_from_args(args):
    """The recipe of parsed options: the estimators' parameters that differ
    from the paper's training, checked.

    Returns
    -------
    dict
        ``{}`` for the paper's training; else some of ``lr_schedule``,
        ``lr_final_fraction`` (cosine), ``lr_step_size`` and ``lr_gamma``
        (step), ``ema_decay``, ``early_stopping``, ``validation_fraction``
        and ``n_iter_no_change`` (with early stopping), with every option of
        the chosen schedule or of early stopping present (defaults filled in).

    Raises
    ------
    RecipeError
        An option is out of range, or applies to a schedule or to early
        stopping that was not chosen.
    """
    for name, schedule in SCHEDULE_OPTIONS.items():
        if getattr(args, name, None) is not None and args.lr_schedule != schedule:
            raise RecipeError(f"{_option(name)} applies to --lr-schedule {schedule} only")
    for name in STOPPING_OPTIONS:
        if getattr(args, name) is not None and not args.early_stopping:
            raise RecipeError(f"{_option(name)} applies with --early-stopping only")
    recipe = {}
    if args.lr_schedule != "constant":
        recipe["lr_schedule"] = args.lr_schedule
        for name, schedule in SCHEDULE_OPTIONS.items():
            value = _given(args, name)
            if schedule == args.lr_schedule and value is not None:
                recipe[name] = value
    if args.ema_decay is not None:
        recipe["ema_decay"] = args.ema_decay
    if args.early_stopping:
        recipe["early_stopping"] = True
        recipe.update({name: _given(args, name) for name in STOPPING_OPTIONS})
    return check_recipe(recipe)


def _given(args, name):
    """The option's value, else the estimators' default (``None`` for
    ``lr_decay_steps``, whose default is the fit's steps)."""
    value = getattr(args, name, None)
    return RECIPE_DEFAULTS[name] if value is None else value


def check_recipe(recipe):
    """``recipe`` with its values checked by the estimators' own checks
    (the message names the command-line option); returns it."""
    try:
        RadFlow(**recipe)._checked_recipe(steps=1)
    except (TypeError, ValueError) as exc:
        message = str(exc).replace("must be None or in", "must be in")
        for name in RECIPE_DEFAULTS:
            message = message.replace(name, _option(name))
        raise RecipeError(message) from None
    return dict(recipe)


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
