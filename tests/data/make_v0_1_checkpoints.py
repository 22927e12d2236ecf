"""Write the radref 0.1 checkpoints that tests/test_estimators.py loads.

Run with the package of commit b47972b (the last one before the training
hyperparameters became constructor parameters) first on the import path:

    git archive b47972b radref | tar -x -C /tmp/radref-b47972b
    PYTHONPATH=/tmp/radref-b47972b python tests/data/make_v0_1_checkpoints.py tests/data/v0_1
"""
import os
import sys

import numpy as np

import radref
from radref import RadFlow, RealNVPFlow, datasets

out = sys.argv[1]
assert radref.RadFlow.fit.__code__.co_varnames[2] == "steps", "run this with radref 0.1"
X = datasets.sample("two_moons", 200, random_state=0)
scores = {}
for cls in (RadFlow, RealNVPFlow):
    model = cls(n_layers=2, hidden=4, random_state=0).fit(X, steps=10, batch_size=50, lr=5e-3)
    model.save(os.path.join(out, f"{cls.__name__}-saved.npz"))
    scores[cls.__name__] = model.score_samples(X)
# a run stopped after 10 of its steps, to be resumed by the new code
RadFlow(n_layers=2, hidden=4, random_state=0).fit(
    X, steps=10, batch_size=50, lr=5e-3, checkpoint=os.path.join(out, "RadFlow-checkpoint.npz"),
    checkpoint_every=5)
np.savez(os.path.join(out, "expected.npz"), X=X, **scores)
