"""State stage: the latest version of every entity, merged order-independently.

The row format (``codec``), the merge (``resolve``, ``apply``), the local store per partition
(``store``, ``restore``, ``rebuild``, ``purge``) and the connector's own topics (``topics``).
Two runners use it: ``connector.ingest`` writes it, ``connector.snapshot`` reads it at a cut.
"""

from connector.state.apply import MemoryStore, Outcome, RowStore, apply_change
from connector.state.resolve import StateRow, merge

__all__ = ["MemoryStore", "Outcome", "RowStore", "StateRow", "apply_change", "merge"]
