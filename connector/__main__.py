"""``python -m connector``: the ``carecloud-connector`` command (``connector.cli``)."""

import sys

from connector.cli import main

sys.exit(main())
