"""Training: Adam (:mod:`~radref.training.optim`), minibatch maximum likelihood
(:mod:`~radref.training.train`), locating a non-finite loss
(:mod:`~radref.training.diagnostics`), checkpoints
(:mod:`~radref.training.checkpoint`), the one table of hyperparameters
(:mod:`~radref.training.hyperparameters`) and one training run
(:mod:`~radref.training.run`).  Builds on :mod:`radref.core` only."""
