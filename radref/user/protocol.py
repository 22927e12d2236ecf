"""Protocols, runs and their directories for ``radref reproduce`` (§4; notes §7).

A *run* trains one model (``rad`` or ``realnvp``) on one problem with one seed
under one *protocol*: everything else that decides its numbers (steps, data
sizes, batch size, Adam's lr, beta1, beta2 and eps, both models'
architectures, how often the held-out set is scored, the radref version, the
data generators' version :data:`radref.datasets.GENERATOR_VERSION`, and the
version :data:`SCHEME` of what a run means, e.g. how a seed draws the data).
The SHA-256 of the protocol's canonical JSON names its directory::

    OUT/protocol-<12 hex digits>/protocol.json       the protocol
        runs/<problem>-<model>-s<seed>/run.json      problem, model, seed, protocol, hash
                                      checkpoint.npz training state (every eval_every steps)
                                      progress.json  steps done, by which process, how fast
                                      result.json    scores and learning curves
                                      test_points.npz per-point held-out log-likelihoods
        results.csv, results.json, summary.json, table.md   of every finished run there
"""
import hashlib
import json
import os

from radref import datasets
from radref._version import __version__
from radref.training.hyperparameters import HYPERPARAMETER
from radref.user.estimators import MODELS as ESTIMATORS
from radref.user.options import describe_recipe

#: Mean log-likelihoods reported in the paper's §4.3 table (nats): (Rad, Real NVP).
PAPER = {"grid": (-1.20, -2.26), "ring": (3.57, 1.85), "two_moons": (-1.21, -1.48),
         "two_circles": (-1.81, -2.17), "spiral": (0.29, -0.36), "many_moons": (-0.83, -1.50)}
MODELS = tuple(ESTIMATORS)  # ("rad", "realnvp"): the one registry of models
#: What a run means (bump when that changes): seed ``s`` draws the data with
#: ``datasets.train_test_split_samples(problem, n_train, n_test, random_state=s)``
#: and seeds the model (``random_state=s``); the scores are mean log-likelihoods
#: of the training set and of the held-out set.
SCHEME = "radref-reproduce/1"
#: Adam's settings other than the learning rate (Kingma & Ba's defaults, the table's).
ADAM = {name: HYPERPARAMETER[name].default for name in ("beta1", "beta2", "eps")}
#: The paper's architectures (§4.2), the models' defaults: 6 coupling layers;
#: Rad 8 hidden units, gating network too; Real NVP 56.
ARCHITECTURES = {name: {"estimator": cls.__name__, **cls.default_architecture()}
                 for name, cls in ESTIMATORS.items()}
#: The paper's protocol (§4.2-4.3): 10,000 points, 50,000 Adam steps at batch 500.
FULL = dict(steps=50_000, n_train=10_000, n_test=10_000, batch_size=500, lr=1e-3,
            seeds=(0, 1, 2), eval_every=2_500)
#: A smoke test of the whole pipeline.
QUICK = dict(steps=60, n_train=1_000, n_test=1_000, batch_size=500, lr=1e-3,
             seeds=(0,), eval_every=30)
#: Default output directory (relative to the current directory; in .gitignore).
DEFAULT_OUT = "radref-results"
RUN_FILE, CHECKPOINT_FILE, PROGRESS_FILE, RESULT_FILE, POINTS_FILE = (
    "run.json", "checkpoint.npz", "progress.json", "result.json", "test_points.npz")


class ReproduceError(ValueError):
    """A reproduction cannot start or did not finish (a one-line error)."""


# ------------------------------------------------------------------ protocols
def make_protocol(steps, n_train, n_test, batch_size, lr, eval_every, hidden=None,
                  recipe=None):
    """The protocol of a run (a JSON-ready dict).

    ``hidden``, when given, replaces the hidden units of both models (and of
    Rad's gating network); otherwise the paper's :data:`ARCHITECTURES` apply.
    ``recipe`` (:func:`radref.user.options.recipe_from_args`: learning-rate
    schedule, parameter averaging, early stopping) applies to both models;
    it is recorded under ``"recipe"`` only when it is not the paper's
    (empty), so the paper protocol's hash does not depend on it.
    """
    architectures = {model: dict(arch) for model, arch in ARCHITECTURES.items()}
    if hidden is not None:
        for arch in architectures.values():
            arch.update({key: int(hidden) for key in ("hidden", "gate_hidden") if key in arch})
    return {"scheme": SCHEME, "radref_version": __version__,
            "data_generator_version": datasets.GENERATOR_VERSION,
            "n_train": int(n_train), "n_test": int(n_test), "steps": int(steps),
            "batch_size": int(batch_size), "adam": {"lr": float(lr), **ADAM},
            "eval_every": int(eval_every), "architectures": architectures,
            **({"recipe": dict(recipe)} if recipe else {})}


def protocol_hash(protocol):
    """SHA-256 (hex) of the protocol's canonical JSON (sorted keys, exact floats)."""
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def differences(stored, requested, prefix=""):
    """Settings in which two JSON documents differ, as ``(dotted.key, stored,
    requested)``; a key missing on one side shows as ``None`` there."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        found = []
        for key in sorted(set(stored) | set(requested)):
            found += differences(stored.get(key), requested.get(key), f"{prefix}{key}.")
        return found
    return [] if stored == requested else [(prefix.rstrip("."), stored, requested)]


def describe_differences(found, stored="stored", requested="requested"):
    return "; ".join(f"{key}: {a!r} {stored}, {b!r} {requested}" for key, a, b in found)


def describe_protocol(protocol):
    rad, nvp = protocol["architectures"]["rad"], protocol["architectures"]["realnvp"]
    adam = protocol["adam"]
    return (f"{protocol['steps']} steps at batch {protocol['batch_size']}, "
            f"{protocol['n_train']} training / {protocol['n_test']} held-out points, "
            f"Adam lr {adam['lr']:g} (beta1 {adam['beta1']:g}, beta2 {adam['beta2']:g}, "
            f"eps {adam['eps']:g}), Rad {rad['n_layers']} layers x {rad['hidden']} hidden "
            f"(gate {rad['gate_hidden']}), Real NVP {nvp['n_layers']} x {nvp['hidden']}, "
            f"held-out score every {protocol['eval_every']} steps, training recipe "
            f"{describe_recipe(protocol.get('recipe', {}))}, radref "
            f"{protocol['radref_version']}, data generators v{protocol['data_generator_version']}")


def run_spec(problem, model, seed, protocol):
    """Everything that identifies a run (``run.json``)."""
    return {"problem": problem, "model": model, "seed": int(seed),
            "protocol_hash": protocol_hash(protocol), "protocol": protocol}


def protocol_dir(out, protocol):
    return os.path.join(out, "protocol-" + protocol_hash(protocol)[:12])


def run_dir(out, spec):
    return os.path.join(protocol_dir(out, spec["protocol"]), "runs",
                        f"{spec['problem']}-{spec['model']}-s{spec['seed']}")


def run_label(spec, with_protocol=False):
    label = f"{spec['problem']} {spec['model']} s{spec['seed']}"
    return f"{label} @{spec['protocol_hash'][:6]}" if with_protocol else label
