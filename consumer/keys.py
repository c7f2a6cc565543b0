"""Names of clicktune's Redis keys. The Lua script builds the same names from the prefix."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    @property
    def offsets(self) -> str:
        """Hash ``"topic:partition" -> highest applied offset``."""
        return f"{self.prefix}offsets"

    @property
    def open_batch(self) -> str:
        return f"{self.prefix}batch:open"

    @property
    def batches(self) -> str:
        """Sorted set of batch ids by sequence number."""
        return f"{self.prefix}batches"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def batch_sessions(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}:sessions"

    def batch_late(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}:late"

    # A session's sub-keys get their own namespace, not a suffix: session ids are client-made
    # and may end in ":clicks" (see consumer/lua/apply.lua).
    def session(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def session_clicks(self, session_id: str) -> str:
        return f"{self.prefix}session-clicks:{session_id}"

    def session_event_ids(self, session_id: str) -> str:
        return f"{self.prefix}session-eids:{session_id}"

    @property
    def catalog(self) -> str:
        """Hash ``item_id -> text``."""
        return f"{self.prefix}catalog"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    @property
    def tasks(self) -> str:
        """Sorted set of task ids by creation time (epoch ms)."""
        return f"{self.prefix}tasks"

    @property
    def outbox(self) -> str:
        """List of messages to publish (tasks, dead letters) written with the state."""
        return f"{self.prefix}outbox"

    @property
    def releases(self) -> str:
        return f"{self.prefix}releases"

    @property
    def release_keys(self) -> str:
        return f"{self.prefix}release:idem"
