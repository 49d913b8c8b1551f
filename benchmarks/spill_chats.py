"""The chats of the spill scenario (spill_scenario.py), without lmfast: the llama-cpp-python
runner (spill_lcpp.py) imports them inside its own venv."""
from __future__ import annotations

TOPICS = ["rivers", "mountains", "bread", "planets", "violins", "glaciers", "bees", "bridges",
          "volcanoes", "tea", "owls", "deserts", "comets", "orchards", "lighthouses", "coral"]
MAX_TOKENS = 16


def system_prompt(k: int) -> str:
    # ~250 tokens of history per chat before its first question, distinct from the first words.
    topic = TOPICS[k % len(TOPICS)]
    facts = " ".join(f"Fact {i} about {topic}: it is item {i} in a long list the user wrote for chat {k}."
                     for i in range(12))
    return f"Chat {k}. You are an expert on {topic}. Keep answers short. Background notes: {facts}"


def question(t: int) -> str:
    return f"Question {t}: tell me one thing about it."
