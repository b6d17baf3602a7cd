# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``python -m kron_transformers`` = ``kron-compress`` (see ``kron_transformers.cli``)."""

import sys

from .cli import main


if __name__ == "__main__":
    sys.exit(main())
