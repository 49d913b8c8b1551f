"""The bounded in-memory store behind ``previous_response_id``: a response id -> the
conversation so far (without its instructions), least recently used out first."""
from __future__ import annotations

import collections
import threading
from typing import Any


class ResponseStore:
    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._items: collections.OrderedDict[str, tuple[str, list[dict[str, Any]]]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, response_id: str, model: str, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            self._items[response_id] = (model, [dict(m) for m in messages])
            self._items.move_to_end(response_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> tuple[str, list[dict[str, Any]]] | None:
        with self._lock:
            item = self._items.get(response_id)
            if item is not None:
                self._items.move_to_end(response_id)
                return item[0], [dict(m) for m in item[1]]
            return None

    def __len__(self) -> int:
        return len(self._items)
