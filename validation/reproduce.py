"""Reproduce the paper's §4.3 experiment: ``python validation/reproduce.py [--quick] [...]``.

Same as ``radref reproduce`` (every option of ``radref reproduce --help``).
Paper protocol: 6 problems x {Rad, Real NVP} x 3 seeds, 50,000 Adam steps
each, over all cores, or on a Dask cluster with ``--scheduler ADDRESS``.
Results go to ``./radref-results/protocol-<hash>/`` (outside version control);
the committed ``validation/results/`` is written only with ``--out
validation/results --write-committed``.  See docs/results.md and docs/sweeps.md.
"""
import sys

from radref.user.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
