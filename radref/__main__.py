import sys

from radref.user.cli import main

sys.exit(main())
