"""``python -m curiojax run ...``: the same as the ``curiojax`` console script."""

import sys

from curiojax.cli import main

sys.exit(main())
