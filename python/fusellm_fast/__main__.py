"""``python -m fusellm_fast``: the ``fusellm-fast`` command."""

import sys

from .cli import main

sys.exit(main())
