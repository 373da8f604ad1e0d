"""`python -m regfd.cli`: the same as the `regfd` command."""

import sys

from . import main

sys.exit(main())
