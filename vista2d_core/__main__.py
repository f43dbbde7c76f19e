"""``python -m vista2d_core`` = the ``vista2d`` command (so ``torchrun -m vista2d_core run ...`` works)."""

import sys

from .cli import main

sys.exit(main())
