"""Training: Adam (:mod:`~radref.training.optim`), minibatch maximum likelihood
(:mod:`~radref.training.train`), locating a non-finite loss
(:mod:`~radref.training.diagnostics`) and checkpoints
(:mod:`~radref.training.checkpoint`).  Builds on :mod:`radref.core` only."""
