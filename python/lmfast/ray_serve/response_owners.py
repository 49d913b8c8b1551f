"""Which model replica stored each /v1/responses answer, so that a request continuing it
(``previous_response_id``) goes back there: each replica keeps its stored responses in its own
memory (lmfast.server.store), and another replica answers 400 "previous response not found".

The ingress reads the id from the start of the answer's body (the JSON object, or the stream's
first event, ``response.created``), which names it before any text. Each ingress replica
remembers the responses it passed on; with several ingress replicas a client that continues
responses should also send an ``x-session-id`` (docs/scaling.md)."""
from __future__ import annotations

import collections
import re

# The store of each replica keeps 256 responses by default; this remembers far more than all
# replicas of a typical deployment keep, in ~100 bytes each.
MAX_OWNERS = 100_000
# The id appears in the first few hundred bytes of either form of the answer.
SCAN_BYTES = 4096
_ID = re.compile(rb'"id"\s*:\s*"(resp_[0-9A-Za-z_-]{1,200})"')


class ResponseOwners:
    def __init__(self, capacity: int = MAX_OWNERS):
        self._owners: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._capacity = capacity

    def owner(self, response_id: str | None) -> str | None:
        return self._owners.get(response_id) if response_id else None

    def remember(self, response_id: str, replica: str) -> None:
        self._owners[response_id] = replica
        self._owners.move_to_end(response_id)
        while len(self._owners) > self._capacity:
            self._owners.popitem(last=False)

    def scan(self, head_bytes: bytes, replica: str | None) -> bool:
        """Remembers the response id found in the first bytes of an answer; whether one was."""
        found = _ID.search(head_bytes[:SCAN_BYTES])
        if found is None or not replica:
            return False
        self.remember(found.group(1).decode(), replica)
        return True
