import sys

from gcbulk.engine.cli import main

sys.exit(main())
