"""Training: Adam (:mod:`~radref.training.optim`), minibatch maximum likelihood
(:mod:`~radref.training.train`), locating a non-finite loss
(:mod:`~radref.training.diagnostics`), checkpoints
(:mod:`~radref.training.checkpoint`), the one table of hyperparameters
(:mod:`~radref.training.hyperparameters`), one training run
(:mod:`~radref.training.run`), and the files and signals every writer shares
(:mod:`~radref.training.files`: atomic writes, locks;
:mod:`~radref.training.signals`: SIGTERM as Ctrl-C).  Builds on
:mod:`radref.core` only."""
