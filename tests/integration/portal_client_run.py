"""A Portal delivery in its own process, for the SIGKILL-mid-session test.

    python -m tests.integration.portal_client_run URL KEY DATE COUNT BATCH_SIZE SNAPSHOT_ID

Delivers ``family_records(COUNT)`` one batch at a time and prints the delivery when done.
"""

from __future__ import annotations

import datetime as dt
import sys

from connector.sinks.portal import PortalClient
from tests.portal_helpers import family_records


def main(argv: list[str]) -> int:
    url, key, day, count, batch_size, snapshot_id = argv
    with PortalClient(url, key, batch_size=int(batch_size), max_concurrency=1) as client:
        delivery = client.deliver(
            "Family",
            dt.date.fromisoformat(day),
            family_records(int(count)),
            int(count),
            snapshot_id=snapshot_id,
        )
    print(delivery, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
