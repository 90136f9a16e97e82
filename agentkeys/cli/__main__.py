import sys

from agentkeys.cli import main

sys.exit(main())
