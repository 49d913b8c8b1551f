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

    def __bool__(self) -> bool:
        return bool(self.hashes) or self.session is not None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _message(m: Any) -> str:
    if not isinstance(m, Mapping):
        return _canonical(m)
    return _canonical({k: m[k] for k in _MESSAGE_FIELDS if m.get(k) is not None})


def prompt_units(path: str, body: Mapping[str, Any]) -> list[str] | None:
    """The prompt of an OpenAI request as ordered strings (one per message), or None for a
    request that has no prompt to route by (embeddings, listings, a malformed body)."""
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        return [_message(m) for m in messages] if isinstance(messages, list) else None
    if path.endswith("/completions"):
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        return [prompt] if isinstance(prompt, str) else None
    if path.endswith("/responses"):
        units = [_canonical({"instructions": body["instructions"]})] if isinstance(body.get("instructions"), str) else []
        given = body.get("input")
        if isinstance(given, str):
            units.append(_message({"role": "user", "content": given}))
        elif isinstance(given, list):
            units += [_message(item) for item in given]
        return units or None
    return None


def block_hashes(seed: str, units: Iterable[str], block_chars: int = BLOCK_CHARS,
                 max_blocks: int = MAX_BLOCKS) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chain hashes after each block: every unit is cut into blocks of ``block_chars`` and ends
    its last block, so a prefix of whole units hashes the same in every request it starts."""
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
    units = prompt_units(path, body) if body is not None else None
    if not units:
        return AffinityKey(session=session)
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    kind = path.rsplit("/", 1)[-1]
    hashes, chars = block_hashes(f"{model}\x1f{kind}", units, block_chars)
    return AffinityKey(hashes=hashes, chars=chars, session=session)
