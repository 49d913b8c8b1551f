"""A request's routing key: chained hashes of the leading blocks of its prompt, and its session.

A conversation's next turn repeats its earlier turns, so its leading blocks hash as the turn
before did; the replica that served those blocks holds their tokens in its KV cache (or its host
tier). The ingress computes the key from the JSON body, before any replica tokenizes it, so the
blocks are characters of the messages, not tokens. Only the messages matter: sampling fields
change between turns without changing what is cached. Nothing here imports Ray."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterable, Mapping

# 256 characters are ~60 English tokens: a history shorter than one block still hashes once
# per message, because every message ends a block.
BLOCK_CHARS = 256
# The key covers at most this many blocks (512 x 256 = 128 K characters): beyond that a longer
# match changes no routing decision, and the hashing stays bounded per request.
MAX_BLOCKS = 512
MAX_SESSION_CHARS = 256
SESSION_HEADER = "x-session-id"
# The fields of a message that reach the chat template; clients that echo an answer back often
# add others (refusal=None, audio=None) that must not change its hash.
_MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")


@dataclasses.dataclass(frozen=True)
class AffinityKey:
    hashes: tuple[int, ...] = ()  # the chain hash after each block, shortest prefix first
    chars: tuple[int, ...] = ()   # characters of the prompt that each of those prefixes covers
    session: str | None = None    # pins a conversation: the `user` field or an x-session-id header
    # Index into ``hashes`` of the block that ends the conversation's first turn (system prompt
    # and first user message), the same in every later turn: its hash names the conversation,
    # so every ingress replica places a conversation it has not seen on the same replica.
    anchor: int = -1
    follows: str | None = None    # previous_response_id: the response this request continues
    replica: str | None = None    # the replica that stored ``follows`` (the ingress fills it in)

    def __bool__(self) -> bool:
        return bool(self.hashes) or self.session is not None or self.replica is not None

    @property
    def anchor_hash(self) -> int | None:
        return self.hashes[self.anchor] if 0 <= self.anchor < len(self.hashes) else None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _message(m: Any) -> str:
    if not isinstance(m, Mapping):
        return _canonical(m)
    return _canonical({k: m[k] for k in _MESSAGE_FIELDS if m.get(k) is not None})


def _first_turn(items: list[Any], before: int = 0) -> int:
    """How many units end the first turn: the leading system/developer messages and the first
    message after them (``before`` units precede the items)."""
    for i, m in enumerate(items):
        if not (isinstance(m, Mapping) and m.get("role") in ("system", "developer")):
            return before + i + 1
    return before + len(items)


def prompt_units(path: str, body: Mapping[str, Any]) -> tuple[list[str], int] | None:
    """The prompt of an OpenAI request as ordered strings (one per message) and how many of them
    make its first turn, or None for a request that has no prompt to route by (embeddings,
    listings, a malformed body). A raw completion's first turn is its first block."""
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        return ([_message(m) for m in messages], _first_turn(messages)) if isinstance(messages, list) else None
    if path.endswith("/completions"):
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        return ([prompt], 0) if isinstance(prompt, str) else None
    if path.endswith("/responses"):
        units = [_canonical({"instructions": body["instructions"]})] if isinstance(body.get("instructions"), str) else []
        given = body.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else given
        if isinstance(items, list):
            first = _first_turn(items, len(units))
            units += [_message(item) for item in items]
            return (units, first) if units else None
        return (units, len(units)) if units else None
    return None


def block_hashes(seed: str, units: Iterable[str], block_chars: int = BLOCK_CHARS, max_blocks: int = MAX_BLOCKS,
                 unit_ends: list[int] | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chain hashes after each block: every unit is cut into blocks of ``block_chars`` and ends
    its last block, so a prefix of whole units hashes the same in every request it starts.
    ``unit_ends``, when given, receives the index of each unit's last block."""
    digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
    hashes: list[int] = []
    chars: list[int] = []
    covered = 0
    for unit in units:
        for start in range(0, max(len(unit), 1), block_chars):
            if len(hashes) >= max_blocks:
                return tuple(hashes), tuple(chars)
            block = unit[start:start + block_chars]
            digest = hashlib.blake2b(digest + block.encode("utf-8", "surrogatepass") + b"\x1e",
                                     digest_size=8).digest()
            covered += len(block)
            hashes.append(int.from_bytes(digest, "little"))
            chars.append(covered)
        if unit_ends is not None:
            unit_ends.append(len(hashes) - 1)
    return tuple(hashes), tuple(chars)


def session_of(headers: Mapping[str, str], body: Mapping[str, Any] | None) -> str | None:
    value = headers.get(SESSION_HEADER)
    if not value and body is not None and isinstance(body.get("user"), str):
        value = "user:" + body["user"]
    return value[:MAX_SESSION_CHARS] if value else None


def parse_body(raw: bytes) -> Mapping[str, Any] | None:
    """The JSON object of a body, or None (the replica's app answers a bad body with its 4xx)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def key_of(path: str, headers: Mapping[str, str], raw_body: bytes, block_chars: int = BLOCK_CHARS) -> AffinityKey:
    """The routing key of one HTTP request (``headers`` with lower-case names)."""
    body = parse_body(raw_body)
    session = session_of(headers, body)
    follows = body.get("previous_response_id") if body is not None and path.endswith("/responses") else None
    follows = follows if isinstance(follows, str) and 0 < len(follows) <= MAX_SESSION_CHARS else None
    prompt = prompt_units(path, body) if body is not None else None
    if not prompt:
        return AffinityKey(session=session, follows=follows)
    units, first = prompt
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    kind = path.rsplit("/", 1)[-1]
    ends: list[int] = []
    hashes, chars = block_hashes(f"{model}\x1f{kind}", units, block_chars, unit_ends=ends)
    anchor = ends[first - 1] if 0 < first <= len(ends) else (0 if hashes else -1)
    return AffinityKey(hashes=hashes, chars=chars, session=session, anchor=anchor, follows=follows)
