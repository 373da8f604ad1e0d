"""`python -m regfd`: the same as the `regfd` command."""

import sys

from regfd.cli import main

sys.exit(main())
