"""`python -m ltms ...` is the same as `ltmc ...`."""

import sys

from ltms.cli import main

sys.exit(main())
