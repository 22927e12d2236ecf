"""Reproduce the paper's §4.3 experiment: ``python validation/reproduce.py [--quick]``.

Same as ``radref reproduce``.  Full protocol: 6 problems x {Rad, Real NVP} x 3
seeds, 50,000 Adam steps each, over all cores; results in validation/results/.
"""
import sys

from radref.user.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
