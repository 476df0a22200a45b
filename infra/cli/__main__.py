"""`python -m infra.cli`: the `modelfn` command."""

import sys

from . import main

sys.exit(main())
