import sys

from moe2sim.cli import main

sys.exit(main())
