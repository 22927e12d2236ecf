"""Shared pytest configuration: hypothesis profiles.

Select a profile with the environment variable ``HYPOTHESIS_PROFILE``:

- ``ci`` (default): deterministic (``derandomize=True``, no example database),
  50 examples per property, no deadline.
- ``dev``: random exploration, 200 examples per property, no deadline.

Shared strategies and the gradient-check helper live in ``tests/helpers.py``.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # When a property fails, hypothesis imports libcst (if installed) to write a
    # patch with the failing example; libcst's import of mypy_extensions raises a
    # DeprecationWarning that ``filterwarnings = error`` would turn into an
    # INTERNALERROR hiding the real failure.  Ignore exactly that warning.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")


def pytest_terminal_summary(terminalreporter):
    """With ``RADREF_TEST_REPORT=1``, print the largest gradient-check relative
    error per backward pass and the largest density-normalization error seen."""
    if os.environ.get("RADREF_TEST_REPORT") != "1":
        return
    import helpers

    terminalreporter.section("radref numerical report")
    for label, err in sorted(helpers.MAX_GRAD_ERROR.items()):
        terminalreporter.write_line(f"max gradient relative error  {label:<28s} {err:.3e}")
    for label, err in sorted(helpers.MAX_ERROR.items()):
        terminalreporter.write_line(f"max error                    {label:<28s} {err:.3e}")
