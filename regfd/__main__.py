import sys

from regfd.cli import main

sys.exit(main())
