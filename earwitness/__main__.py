"""`python -m earwitness` is the `earwitness` command."""

import sys

from earwitness.cli import main

sys.exit(main())
