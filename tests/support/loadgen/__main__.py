"""Entry point for ``python -m loadgen`` (with ``PYTHONPATH=tests/support``)."""

import sys

from .cli import main

sys.exit(main())
