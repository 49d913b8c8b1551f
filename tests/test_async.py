"""The asyncio API: AsyncClient, AsyncLLM, AsyncPredictionStream (asyncio.run, no plugin)."""
import asyncio
import threading

import pytest

import lmfast as lms

GREEDY = {"temperature": 0}
from .test_concurrency import QUESTIONS  # (question, expected lower-case word)


def test_async_client_respond_and_concurrent_tasks(smollm2_path):
    async def main():
        async with lms.AsyncClient() as client:
            # A new instance of its own: model() could return one another client loaded, which
            # leaving this block does not unload (the loaded models are the process's).
            model = await client.llm.load_new_instance(str(smollm2_path), "async-own")
            assert isinstance(model, lms.AsyncLLM)
            listed = [m.identifier for m in await client.llm.list_loaded()]
            assert model.identifier in listed and listed == [m.identifier for m in lms.Client().llm.list_loaded()]
            assert (await model.get_info()).model_key == "smollm2-135m-instruct"

            ticks = 0
            stop = asyncio.Event()

            async def ticker():
                nonlocal ticks
                while not stop.is_set():
                    await asyncio.sleep(0.01)
                    ticks += 1

            tick_task = asyncio.create_task(ticker())
            results = await asyncio.gather(*(model.respond(q, config=GREEDY) for q, _ in QUESTIONS))
            stop.set()
            await tick_task
            for (q, want), result in zip(QUESTIONS, results):
                assert want in result.content.lower(), (q, result.content)
            # The loop kept running while four predictions were generated.
            assert ticks >= 10
            # The four requests were served by one engine (one batch each step when possible).
            return model
        # leaving the block unloads
    model = asyncio.run(main())
    with pytest.raises(lms.ModelUnloadedError):
        asyncio.run(model.respond("hi"))


def test_async_stream_fragments_and_callbacks(llm):
    amodel = lms.AsyncLLM(llm)
    seen = {"first": 0, "fragments": [], "threads": set(), "message": None, "progress": []}
    loop_thread = threading.get_ident()
    # The two answers compared below take one path, the prompt found cached: greedy text may
    # depend on how a prompt was split into batches (DESIGN.md), with flash attention off more so.
    llm.respond("What is the capital of France?", config=GREEDY)

    def on_fragment(f):
        seen["fragments"].append(f.content)
        seen["threads"].add(threading.get_ident())

    async def main():
        stream = await amodel.respond_stream(
            "What is the capital of France?", config=GREEDY,
            on_first_token=lambda: seen.__setitem__("first", seen["first"] + 1),
            on_prediction_fragment=on_fragment,
            on_message=lambda m: seen.__setitem__("message", m),
            on_prompt_processing_progress=seen["progress"].append)
        with pytest.raises(lms.LMStudioRuntimeError):
            stream.result()
        texts = [f.content async for f in stream]
        return texts, stream.result()

    texts, result = asyncio.run(main())
    assert "".join(texts) == result.content and "Paris" in result.content
    assert seen["fragments"] == texts and seen["first"] == 1
    assert seen["threads"] == {loop_thread}  # callbacks run in the loop's thread
    assert seen["progress"][0] == 0.0 and seen["progress"][-1] == 1.0
    assert seen["message"].content[0]["text"] == result.content
    sync = llm.respond("What is the capital of France?", config=GREEDY)
    assert sync.content == result.content


def test_cancelling_the_consuming_task_frees_the_request(llm):
    _, engine = llm._instance.native()

    async def consume(stream, got):
        async for f in stream:
            got.append(f)

    async def main():
        amodel = lms.AsyncLLM(llm)
        stream = await amodel.respond_stream("Write a long story about a dragon.",
                                             config={"temperature": 0, "maxTokens": 400})
        got = []
        task = asyncio.create_task(consume(stream, got))
        while len(got) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(lms.LMStudioCancelledError):
            stream.result()
        for _ in range(500):
            if engine.idle_seconds() > 0:
                break
            await asyncio.sleep(0.01)
        assert engine.idle_seconds() > 0  # nothing left running
        return await amodel.respond("What is the capital of France?", config=GREEDY)

    assert "Paris" in asyncio.run(main()).content


def test_async_cancel_gives_partial_result(llm):
    async def main():
        stream = await lms.AsyncLLM(llm).respond_stream("Count from 1 to 100.",
                                                        config={"temperature": 0, "maxTokens": 300})
        n = 0
        async for _ in stream:
            n += 1
            if n == 4:
                await stream.cancel()
        return stream.result()

    result = asyncio.run(main())
    assert result.stats.stop_reason == "userStopped"
    assert 4 <= result.stats.predicted_tokens_count < 20


def test_async_embedding_namespace():
    async def main():
        async with lms.AsyncClient() as client:
            model = await client.embedding.load_new_instance("all-minilm-l6-v2", "async-own-embedding")
            assert isinstance(model, lms.AsyncEmbeddingModel)
            one, batch = await asyncio.gather(model.embed("a cat"), model.embed(["a cat", "a dog"]))
            assert len(one) == 384 and len(batch) == 2
            assert max(abs(a - b) for a, b in zip(one, batch[0])) < 5e-4  # batch shape changes rounding only
            listed = [m.identifier for m in await client.list_loaded_models("embedding")]
            assert model.identifier in listed and listed == [m.identifier for m in lms.list_loaded_models("embedding")]
            assert (await model.get_info()).type == "embedding"
            return model
    model = asyncio.run(main())
    with pytest.raises(lms.ModelUnloadedError):
        asyncio.run(model.embed("x"))
