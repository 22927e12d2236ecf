"""Reference tooling for people who verify the mathematics and port the model:
finite-difference gradient checks (:mod:`~radref.reference.gradcheck`),
Theorem 1 and the folding constructions (:mod:`~radref.reference.theory`) and
the golden test vectors with their port checker (:mod:`~radref.reference.golden`).
Builds on :mod:`radref.core` and :mod:`radref.training`."""
