"""The SDK's on_load_progress: 0.0 when a load starts, strictly increasing values from
llama.cpp's loader, 1.0 on success (and only 1.0 when the model is loaded already); an
exception in the callback is logged and the load goes on."""
from __future__ import annotations

import asyncio
import logging

import lmfast as lms
from lmfast.models.registry import fetch_converted

LOAD = {"cpuThreads": 1, "contextLength": 512}


def test_progress_rises_from_zero_to_one(client, smollm2_path):
    seen: list[float] = []
    model = client.llm.load_new_instance(str(smollm2_path), "progress-new", config=LOAD,
                                         on_load_progress=seen.append)
    try:
        assert seen[0] == 0.0 and seen[-1] == 1.0
        assert all(a < b for a, b in zip(seen, seen[1:])), seen
        assert len(seen) > 3, seen  # the loader reported steps in between, not only the ends
        again: list[float] = []
        assert client.llm.model("progress-new", on_load_progress=again.append) == model
        assert again == [1.0]
    finally:
        model.unload()


def test_a_failing_callback_is_logged_and_the_load_goes_on(client, smollm2_path, caplog):
    def broken(progress: float) -> None:
        raise RuntimeError(f"callback failed at {progress}")

    with caplog.at_level(logging.ERROR, logger="lmfast"):
        model = client.llm.load_new_instance(str(smollm2_path), "progress-broken", config=LOAD,
                                             on_load_progress=broken)
    try:
        r = model.complete("The sky is", config={"temperature": 0, "maxTokens": 2})
        assert r.stats.predicted_tokens_count == 2
        assert any("on_load_progress" in r.getMessage() for r in caplog.records)
    finally:
        model.unload()


def test_async_and_embedding_loads_report_progress(smollm2_path):
    minilm = fetch_converted("all-minilm-l6-v2").path

    async def main() -> tuple[list[float], list[float]]:
        llm_seen: list[float] = []
        emb_seen: list[float] = []
        async with lms.AsyncClient() as client:
            await client.llm.load_new_instance(str(smollm2_path), "progress-async", config=LOAD,
                                               on_load_progress=llm_seen.append)
            # A new instance: model() would return one another client of this process loaded
            # (loaded models belong to the process), and a load that does not run reports only 1.0.
            await client.embedding.load_new_instance(str(minilm), "progress-async-embedding",
                                                     on_load_progress=emb_seen.append)
        return llm_seen, emb_seen

    for seen in asyncio.run(main()):
        assert seen[0] == 0.0 and seen[-1] == 1.0 and all(a < b for a, b in zip(seen, seen[1:])), seen
