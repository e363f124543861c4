import sys

from moe2sim.hardware.cli import main

sys.exit(main())
