"""The user layer: scikit-learn-style estimators (:mod:`~radref.user.estimators`),
the ``radref`` command (:mod:`~radref.user.cli`), plots
(:mod:`~radref.user.plots`) and the paper reproduction
(:mod:`~radref.user.reproduce`).  The top of the import graph."""
