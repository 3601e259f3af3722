"""``python -m gcbulk``: the same as the ``gcbulk`` command."""

import sys

from gcbulk.engine.cli import main

sys.exit(main())
