"""State stage: the latest version of every entity, merged order-independently."""

from connector.state.apply import MemoryStore, Outcome, RowStore, apply_change
from connector.state.resolve import StateRow, merge

__all__ = ["MemoryStore", "Outcome", "RowStore", "StateRow", "apply_change", "merge"]
