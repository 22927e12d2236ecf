import sys

from radref.cli import main

sys.exit(main())
