"""The user layer: scikit-learn-style estimators (:mod:`~radref.user.estimators`,
adapters over :class:`radref.training.run.TrainingRun`; inference in
:mod:`~radref.user.inference`), the ``radref`` command (:mod:`~radref.user.cli`,
:mod:`~radref.user.cli_train`, :mod:`~radref.user.cli_common`; options from the
table of hyperparameters, :mod:`~radref.user.options`), plots
(:mod:`~radref.user.plots`) and the paper reproduction
(:mod:`~radref.user.reproduce`).  The top of the import graph."""
