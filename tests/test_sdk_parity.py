"""SDK parity, second pass (issue 16): the names, types and behaviours an LM Studio script
meets beyond the documentation pages' examples, each checked against what the SDK does."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import traceback

import pytest

import lmfast as lms
from lmfast import config as config_tables
from lmfast.llm import ReasoningSplitter
from lmfast.models.registry import resolve
from lmfast.tools import ToolCallRequest, tool_definitions

from .conftest import GREEDY
from .gguf_mutate import with_chat_template
from .test_tools import TOOL_TEMPLATE, _few_shot, add, greet

SHORT = {**GREEDY, "maxTokens": 16}


@pytest.fixture(scope="module")
def small(client, smollm2_path):
    """SmolLM2 with one decode thread (the session's shared model uses the default count, which
    a loaded 2-core machine makes slow)."""
    model = client.llm.load_new_instance(str(smollm2_path), "parity-small",
                                         config={"contextLength": 1024, "cpuThreads": 1})
    yield model
    model.unload()


# -- 1. publisher/name model keys ------------------------------------------------------------------

@pytest.fixture
def models_dir(tmp_path, monkeypatch, smollm2_path):
    """A models folder in LM Studio's layout (publisher/repo/file) holding SmolLM2 under a
    Llama file name, plus an aliases.json with keys of the publisher/name form."""
    folder = tmp_path / "models"
    target = folder / "hugging-quants" / "Llama-3.2-1B-Instruct-Q4_K_M-GGUF" / "llama-3.2-1b-instruct-q4_k_m.gguf"
    target.parent.mkdir(parents=True)
    target.symlink_to(smollm2_path)
    (folder / "aliases.json").write_text(json.dumps({
        "nomic-ai/nomic-chat-v1.5": "hugging-quants/Llama-3.2-1B-Instruct-Q4_K_M-GGUF/llama-3.2-1b-instruct-q4_k_m.gguf",
        "my-llama": "hugging-quants/llama-3.2-1b-instruct"}))
    monkeypatch.setenv("LMFAST_MODELS_DIR", str(folder))
    return folder, target


def test_publisher_keys_resolve_with_and_without_the_publisher(models_dir):
    folder, target = models_dir
    for key in ("hugging-quants/llama-3.2-1b-instruct", "Hugging-Quants/Llama-3.2-1B-Instruct",
                "llama-3.2-1b-instruct"):
        mf = resolve(key)
        assert (mf.path, mf.model_key) == (target, "llama-3.2-1b-instruct"), key
    # An alias whose key has the publisher form, and one whose target is such a key.
    assert resolve("nomic-ai/nomic-chat-v1.5").path == target.resolve()
    assert resolve("nomic-ai/nomic-chat-v1.5").model_key == "nomic-ai/nomic-chat-v1.5"
    assert resolve("my-llama").path == target
    listed = {m.model_key for m in lms.Client().list_downloaded_models("llm")}
    assert {"llama-3.2-1b-instruct", "nomic-ai/nomic-chat-v1.5", "my-llama"} <= listed
    with pytest.raises(lms.LMStudioModelNotFoundError, match="no-such-model"):
        resolve("hugging-quants/no-such-model")
    with pytest.raises(lms.LMStudioModelNotFoundError, match="model file not found"):
        resolve("models/missing.gguf")


def test_a_loaded_model_is_found_by_its_key_with_or_without_the_publisher(models_dir):
    with lms.Client() as client:
        before = len(client.llm.list_loaded())  # the process's, other clients' included
        model = client.llm.model("hugging-quants/llama-3.2-1b-instruct", config={"cpuThreads": 1})
        assert model.get_info().model_key == "llama-3.2-1b-instruct"
        assert client.llm.model("llama-3.2-1b-instruct") == model
        assert client.llm.model("hugging-quants/llama-3.2-1b-instruct") == model
        assert len(client.llm.list_loaded()) == before + 1
        alias = client.llm.model("nomic-ai/nomic-chat-v1.5", config={"cpuThreads": 1})
        assert alias.get_info().model_key == "nomic-ai/nomic-chat-v1.5"


# -- 2. errors ---------------------------------------------------------------------------------------

def test_every_lmfast_exception_has_the_sdk_prefix_and_the_old_names_stay():
    classes = {obj for name, obj in vars(lms).items() if isinstance(obj, type) and issubclass(obj, lms.LMStudioError)}
    # ValidationError keeps the SDK's own name for it (msgspec's there).
    assert all(c.__name__.startswith("LMStudio") for c in classes - {lms.ValidationError}), sorted(
        c.__name__ for c in classes)
    assert lms.ModelLoadError is lms.LMStudioModelLoadError
    assert lms.ModelUnloadedError is lms.LMStudioModelUnloadedError
    assert lms.TemplateError is lms.LMStudioTemplateError
    assert lms.InvalidConfigError is lms.LMStudioInvalidConfigError
    # The SDK's hierarchy (reference §8), and config value errors as the SDK's ValidationError.
    assert issubclass(lms.LMStudioPresetNotFoundError, lms.LMStudioServerError)
    assert issubclass(lms.LMStudioChannelClosedError, lms.LMStudioServerError)
    assert issubclass(lms.LMStudioWebsocketError, lms.LMStudioClientError)
    assert issubclass(lms.LMStudioUnknownMessageWarning, UserWarning)
    assert issubclass(lms.InvalidConfigError, lms.ValidationError) and issubclass(lms.ValidationError, ValueError)
    with pytest.raises(lms.ValidationError, match="temperature"):
        lms.LlmPredictionConfig(temperature=-1)
    err = lms.LMStudioModelNotFoundError("nothing here")
    assert isinstance(err.server_error, lms.SerializedLMSExtendedError) and err.server_error.title == "nothing here"


def test_a_duplicate_identifier_is_the_sdks_server_error(client, smollm2_path):
    model = client.llm.load_new_instance(str(smollm2_path), "parity-dup", config={"contextLength": 256, "cpuThreads": 1})
    try:
        with pytest.raises(lms.LMStudioServerError, match="Model load error: .*already loaded"):
            client.llm.load_new_instance(str(smollm2_path), "parity-dup")
    finally:
        model.unload()


def _frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return traceback.extract_tb(exc.__traceback__)


def test_tracebacks_end_at_the_public_api(llm, monkeypatch):
    monkeypatch.delenv("LMS_KEEP_INTERNAL_STACK", raising=False)
    with pytest.raises(lms.LMStudioModelNotFoundError) as info:
        lms.llm("no-such-model-parity")
    frames = _frames(info.value)
    assert frames[0].filename == __file__  # the user's own line...
    assert [os.path.basename(f.filename) for f in frames[1:]] == ["errors.py"]  # ...then only the cut
    with pytest.raises(lms.InvalidConfigError) as info:
        llm.respond("hi", config={"temperature": "hot"})
    assert [os.path.basename(f.filename) for f in _frames(info.value)] == ["test_sdk_parity.py", "errors.py"]
    # The wrapped functions stay reachable, and the internal stack can be kept for debugging.
    assert lms.LLM.respond.__wrapped__.__name__ == "respond"
    monkeypatch.setenv("LMS_KEEP_INTERNAL_STACK", "1")
    with pytest.raises(lms.LMStudioModelNotFoundError) as info:
        lms.llm("no-such-model-parity")
    assert "registry.py" in {os.path.basename(f.filename) for f in _frames(info.value)}


def test_unload_of_an_unknown_identifier_cuts_its_traceback(client, monkeypatch):
    monkeypatch.delenv("LMS_KEEP_INTERNAL_STACK", raising=False)
    for unload in (client.llm.unload, lms.Client().embedding.unload, lms.get_default_client().llm.unload):
        with pytest.raises(lms.LMStudioModelNotFoundError, match="no-such-instance-parity") as info:
            unload("no-such-instance-parity")
        assert [os.path.basename(f.filename) for f in _frames(info.value)] == ["test_sdk_parity.py", "errors.py"]


def test_async_tracebacks_end_at_the_public_api(llm, monkeypatch):
    monkeypatch.delenv("LMS_KEEP_INTERNAL_STACK", raising=False)

    async def main():
        async with lms.AsyncClient() as client:
            await client.llm.model("no-such-model-parity")
    with pytest.raises(lms.LMStudioModelNotFoundError) as info:
        asyncio.run(main())
    names = [os.path.basename(f.filename) for f in _frames(info.value)]
    assert "registry.py" not in names and "client.py" not in names


# -- 3. behaviour -----------------------------------------------------------------------------------

def test_async_cancel_on_the_first_fragment_stops_at_once(small):
    async def one_run():
        model = lms.AsyncLLM(small)
        stream = await model.respond_stream("Tell me a long story about the sea.",
                                            config={"temperature": 0, "maxTokens": 64})
        fragments = []
        async for fragment in stream:
            fragments.append(fragment)
            await stream.cancel()
        return fragments, stream.result()

    for _ in range(5):
        fragments, result = asyncio.run(one_run())
        assert len(fragments) == 1
        assert result.stats.stop_reason == "userStopped"


def test_sync_cancel_on_the_first_fragment_stops_at_once(small):
    stream = small.respond_stream("Tell me a long story about the sea.", config={"temperature": 0, "maxTokens": 64})
    fragments = []
    for fragment in stream:
        fragments.append(fragment)
        stream.cancel()
    assert len(fragments) == 1 and stream.result().stats.stop_reason == "userStopped"


def test_cancel_before_the_stream_starts_ends_it_as_user_stopped(small):
    """cancel() before anything was read: the prediction starts cancelled (it ran to maxTokens
    before). At most the first token comes: the cancel can land while the prompt is evaluated."""
    cfg = {"temperature": 0, "maxTokens": 64}
    stream = small.respond_stream("Tell me a long story about the sea.", config=cfg)
    stream.cancel()
    result = stream.wait_for_result()
    assert result.stats.stop_reason == "userStopped" and result.stats.predicted_tokens_count <= 1, result.stats
    stream = small.respond_stream("Tell me a long story about the sea.", config=cfg)
    stream.cancel()
    assert list(stream) == [] and stream.result().stats.stop_reason == "userStopped"


def test_async_llm_renders_and_tokenizes_off_the_event_loop(small):
    seen = []

    class Recording(lms.LLM):
        def _render_with_tools(self, *args, **kwargs):
            seen.append(("render", threading.get_ident()))
            return super()._render_with_tools(*args, **kwargs)

        def _tokens(self, text):
            seen.append(("tokens", threading.get_ident()))
            return super()._tokens(text)

        def tokenize(self, input):
            seen.append(("tokenize", threading.get_ident()))
            return super().tokenize(input)

    async def main():
        model = lms.AsyncLLM(Recording(small._instance))
        loop_thread = threading.get_ident()
        await model.respond("Hi", config=SHORT)
        await model.complete("Hi", config=SHORT)
        await model.apply_prompt_template("Hi")
        assert await model.tokenize("Hello") == small.tokenize("Hello")
        assert await model.count_tokens("Hello") == len(small.tokenize("Hello"))
        return loop_thread
    loop_thread = asyncio.run(main())
    assert {what for what, _ in seen} == {"render", "tokens", "tokenize"}
    assert all(thread != loop_thread for _, thread in seen)


@pytest.fixture(scope="module")
def tool_llm(client, smollm2_path, tmp_path_factory):
    path = with_chat_template(smollm2_path, TOOL_TEMPLATE,
                              tmp_path_factory.mktemp("parity-tools") / "smollm2-tools.gguf")
    model = client.llm.load_new_instance(str(path), "parity-tools", config={"contextLength": 2048, "cpuThreads": 1})
    yield model
    model.unload()


@pytest.mark.slow
def test_async_on_message_carries_the_tool_calls_as_the_sync_one_does(tool_llm):
    defs = [d.to_openai() for d in tool_definitions([add, greet]).values()]
    config = {"temperature": 0, "maxTokens": 96, "rawTools": {"type": "toolArray", "tools": defs}}
    sync_messages = []
    tool_llm.respond(_few_shot("What is 17 + 25?"), config=config, on_message=sync_messages.append)

    async def main():
        messages = []
        await lms.AsyncLLM(tool_llm).respond(_few_shot("What is 17 + 25?"), config=config,
                                             on_message=messages.append)
        return messages
    async_messages = asyncio.run(main())
    assert len(async_messages) == 1
    parts = async_messages[0].content
    assert parts[-1]["type"] == "toolCallRequest"
    assert parts[-1].tool_call_request.arguments == {"a": 17, "b": 25}
    assert parts[-1]["toolCallRequest"]["name"] == "add"
    # The same message as the sync path's, up to the generated call id.
    strip = [{k: v for k, v in p.items() if k != "toolCallRequest"} for p in parts]
    assert strip == [{k: v for k, v in p.items() if k != "toolCallRequest"} for p in sync_messages[0].content]


def test_tool_call_stop_strings_stop_with_reason_tool_calls(small):
    prompt = "Counting: 1, 2, 3, 4,"
    plain = small.complete(prompt, config={"temperature": 0, "maxTokens": 14}).content
    first, second = " 6", " 8"
    assert 0 <= plain.find(first) < plain.find(second)  # the reference: greedy counting goes on
    result = small.complete(prompt, config={"temperature": 0, "maxTokens": 14, "toolCallStopStrings": [first]})
    assert (result.content, result.stats.stop_reason) == (plain[:plain.find(first)], "toolCalls")
    # With both kinds, the string generated first decides the stop reason.
    both = small.complete(prompt, config={"temperature": 0, "maxTokens": 14, "stopStrings": [first],
                                        "toolCallStopStrings": [second]})
    assert both.stats.stop_reason == "stopStringFound"
    both = small.complete(prompt, config={"temperature": 0, "maxTokens": 14, "stopStrings": [second],
                                        "toolCallStopStrings": [first]})
    assert both.stats.stop_reason == "toolCalls"


def test_reasoning_splitter_across_fragments():
    s = ReasoningSplitter("<think>", "</think>")
    pieces = s.push("Hi <th") + s.push("ink>plan") + s.push(" more</thi") + s.push("nk>Answer") + s.flush()
    assert pieces == [("Hi ", "none"), ("<think>", "reasoningStartTag"), ("plan", "reasoning"),
                      (" more", "reasoning"), ("</think>", "reasoningEndTag"), ("Answer", "none")]


def test_reasoning_parsing_marks_fragments(small):
    """SmolLM2 does not think in tags, so the markers are two numbers of a greedy count: the
    fragments between them are 'reasoning', and the text is what the plain prediction gives."""
    prompt = "Counting: 1, 2,"
    plain = small.complete(prompt, config={"temperature": 0, "maxTokens": 14}).content
    assert " 3" in plain and " 6" in plain
    stream = small.complete_stream(prompt, config={"temperature": 0, "maxTokens": 14, "reasoningParsing": {
        "enabled": True, "startString": " 3", "endString": " 6"}})
    fragments = list(stream)
    assert "".join(f.content for f in fragments) == plain == stream.result().content
    kinds = [f.reasoning_type for f in fragments]
    assert kinds.count("reasoningStartTag") == 1 and kinds.count("reasoningEndTag") == 1
    start, end = kinds.index("reasoningStartTag"), kinds.index("reasoningEndTag")
    assert set(kinds[:start]) <= {"none"} and set(kinds[start + 1:end]) == {"reasoning"}
    assert "".join(f.content for f in fragments[start:end + 1]) == plain[plain.find(" 3"):plain.find(" 6") + 2]
    assert sum(f.tokens_count for f in fragments) == stream.result().stats.predicted_tokens_count
    off = list(small.complete_stream(prompt, config={"temperature": 0, "maxTokens": 14}))
    assert {f.reasoning_type for f in off} == {"none"}


# -- 4. typed config records -------------------------------------------------------------------------

@pytest.mark.parametrize("cls, table", [(lms.LlmLoadModelConfig, config_tables.LOAD_KEYS),
                                        (lms.LlmPredictionConfig, config_tables.PREDICTION_KEYS),
                                        (lms.EmbeddingLoadModelConfig, config_tables.EMBEDDING_LOAD_KEYS)])
def test_config_records_are_generated_from_the_key_table(cls, table):
    assert cls._names == tuple(k.name for k in table)
    assert set(getattr(lms, cls.__name__ + "Dict").__annotations__) == {k.name for k in table}


def test_config_records_attributes_and_dict_round_trip():
    cfg = lms.LlmLoadModelConfig(context_length=2048, gpu={"ratio": "max", "split_strategy": "evenly"})
    assert cfg.context_length == cfg.contextLength == cfg["contextLength"] == cfg["context_length"] == 2048
    assert isinstance(cfg.gpu, lms.GpuSetting) and cfg.gpu.ratio == 1.0 and cfg.gpu.splitStrategy == "evenly"
    assert cfg.seed is None  # unset fields read as None, as on the SDK's structs
    assert cfg.to_dict() == {"contextLength": 2048, "gpu": {"ratio": 1.0, "splitStrategy": "evenly"}}
    assert lms.LlmLoadModelConfig.from_dict(cfg.to_dict()) == cfg
    assert lms.LlmLoadModelConfig.from_dict({"context_length": 2048, "gpu": {"ratio": 1.0, "split_strategy": "evenly"}}) == cfg
    assert str(cfg).startswith("LlmLoadModelConfig.from_dict(")
    cfg.keep_model_in_memory = False
    assert cfg["keepModelInMemory"] is False
    with pytest.raises(lms.InvalidConfigError, match="contextLength"):
        cfg.context_length = 0
    with pytest.raises(AttributeError):
        cfg.no_such_field = 1
    pcfg = lms.LlmPredictionConfig(max_tokens=5, stop_strings=["\n"])
    assert json.loads(json.dumps(pcfg)) == {"maxTokens": 5, "stopStrings": ["\n"]}


def test_typed_configs_in_and_out(client, smollm2_path):
    load = lms.LlmLoadModelConfig(context_length=512, cpu_threads=1, use_fp16_for_kv_cache=False)
    model = client.llm.load_new_instance(str(smollm2_path), "parity-typed", config=load)
    try:
        applied = model.get_load_config()
        assert isinstance(applied, lms.LlmLoadModelConfig)
        assert (applied.context_length, applied.llama_k_cache_quantization_type, applied["llamaVCacheQuantizationType"]) \
            == (512, "f32", "f32")
        typed = model.respond("Name a colour.", config=lms.LlmPredictionConfig(temperature=0, max_tokens=8))
        plain = model.respond("Name a colour.", config={"temperature": 0, "max_tokens": 8})
        assert typed.content == plain.content
        assert isinstance(typed.load_config, lms.LlmLoadModelConfig) and typed.load_config == applied
        assert isinstance(typed.prediction_config, lms.LlmPredictionConfig)
        assert typed.prediction_config.max_tokens == 8 and typed.prediction_config["temperature"] == 0
    finally:
        model.unload()


def test_keys_a_model_cannot_honour_raise_errors_that_name_them(client, smollm2_path):
    # numExperts is honoured for mixture-of-experts models (tests/test_num_experts.py); SmolLM2 has
    # no experts, so a load that asks for some fails naming the key.
    assert lms.LlmLoadModelConfig({"num_experts": 2}).numExperts == 2
    with pytest.raises(lms.LMStudioUnsupportedConfigError, match="numExperts.*not a mixture-of-experts"):
        client.llm.load_new_instance(str(smollm2_path), "parity-experts", config={"numExperts": 2})
    assert lms.LlmLoadModelConfig(gpu_strict_vram_cap=True).gpuStrictVramCap is True


# -- 5. chat content types ---------------------------------------------------------------------------

def test_content_parts_are_the_sdks_types():
    image = {"type": "file", "name": "cat.png", "identifier": "f-1", "size_bytes": 12, "file_type": "image"}
    chat = lms.Chat("Be brief.")
    chat.add_user_message("What is this?", images=[image])
    user = chat.messages[1]
    assert isinstance(user, lms.UserMessage)
    assert [type(p) for p in user.content] == [lms.TextData, lms.FileHandle]
    assert user.content[1].size_bytes == 12 and user.content[1].file_type == "image"
    assert chat.to_dict()["messages"][1]["content"][1] == {
        "type": "file", "name": "cat.png", "identifier": "f-1", "sizeBytes": 12, "fileType": "image"}
    history = lms.ChatHistoryData(messages=chat.to_dict()["messages"])
    assert lms.Chat.from_history(history).to_dict() == chat.to_dict()
    assert lms.TextData(text="x").to_dict() == {"type": "text", "text": "x"}


def test_assistant_tool_requests_are_wrapped_once_in_every_form():
    request = {"type": "function", "id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}}
    forms = [ToolCallRequest("call_1", "add", {"a": 1, "b": 2}), request,
             {"type": "toolCallRequest", "toolCallRequest": request}]
    for form in forms:
        chat = lms.Chat()
        chat.add_user_message("1 + 2?")
        msg = chat.add_assistant_response("", [form])
        assert msg.to_dict()["content"][1] == {"type": "toolCallRequest", "toolCallRequest": request}, form
        result = chat.add_tool_result(lms.ToolCallResultData(tool_call_id="call_1", content="3"))
        assert isinstance(result.content[0], lms.ToolCallResultData)
        assert lms.Chat.from_history(chat.to_dict()).to_dict() == chat.to_dict()


@pytest.mark.parametrize("call", [
    lambda c: c.add_system_prompt(lms.FileHandle(name="a.png", identifier="f", size_bytes=1, file_type="image")),
    lambda c: c.add_system_prompt(("one", "two")),
    lambda c: c.add_assistant_response(("a", "b")),
    lambda c: c.add_user_message({"type": "toolCallResult", "toolCallId": "x", "content": "1"}),
])
def test_content_the_sdk_refuses_is_refused(call):
    with pytest.raises(lms.LMStudioValueError):
        call(lms.Chat())



# -- 5b. file handles, keyword forms and wording (issue 32 item 3) ---------------------------------

FILE_HANDLE = {"name": "cat.png", "identifier": "file-1", "sizeBytes": 42, "file_type": "image"}


def test_file_handle_dicts_are_user_message_parts_in_every_form():
    """A dict with name, identifier and fileType (or file_type) is a file part without a "type",
    as the SDK reads it; files=, images= and _files= (the SDK's earlier name) append them."""
    expected = {"type": "file", "name": "cat.png", "identifier": "file-1", "sizeBytes": 42, "fileType": "image"}
    forms = [lambda c: c.add_user_message(["What is this?", FILE_HANDLE]),
             lambda c: c.add_user_message("What is this?", files=[FILE_HANDLE]),
             lambda c: c.add_user_message("What is this?", images=[lms.FileHandle(FILE_HANDLE)]),
             lambda c: c.add_user_message("What is this?", _files=[FILE_HANDLE]),
             lambda c: c.add_entry("user", [{"text": "What is this?"}, FILE_HANDLE])]
    for form in forms:
        chat = lms.Chat()
        form(chat)
        parts = chat.to_dict()["messages"][0]["content"]
        assert parts == [{"type": "text", "text": "What is this?"}, expected], parts
        assert lms.Chat.from_history(chat.to_dict()).to_dict() == chat.to_dict()
    chat = lms.Chat()
    chat.add_user_message(FILE_HANDLE)  # a file alone is a message; a second user turn merges into it
    chat.add_user_message("and this?")
    assert [p["type"] for p in chat.to_dict()["messages"][0]["content"]] == ["file", "text"]
    assert repr(chat) == "Chat(messages=1)" and str(chat).startswith("Chat.from_history({")


@pytest.mark.parametrize("call, message", [
    (lambda c: c.add_user_message(42), "Unable to parse user message content: 42"),
    (lambda c: c.add_user_message({"name": "x.png"}), "Unable to parse user message content: {'name': 'x.png'}"),
    (lambda c: c.add_system_prompt(FILE_HANDLE), "Unable to parse system prompt: "),
    (lambda c: c.add_assistant_response(("a", "b")), "Unable to parse assistant response content: "),
    (lambda c: c.add_assistant_response("ok", [{"nope": 1}]), "Unable to parse tool call request content: "),
    (lambda c: c.add_tool_result({"toolCallId": "x"}), "Unable to parse tool result: "),
    (lambda c: c.add_entry("system", ["a", "b"]), "'system' role does not support multi-part message content."),
    (lambda c: c.add_entry("robot", "hi"), "Unknown history role: robot"),
    (lambda c: c.add_user_message([]), "Empty user messages are not supported."),
    (lambda c: lms.Chat.from_history({"messages": [42]}), "Could not parse history entry: 42"),
    (lambda c: lms.Chat.from_history(3), "Expected Chat, ChatHistoryData, or a dict with a 'messages' key"),
    (lambda c: c.append(7), "7 is not a valid chat entry"),
])
def test_invalid_chat_shapes_raise_with_the_sdks_wording(call, message):
    with pytest.raises(lms.LMStudioValueError) as info:
        call(lms.Chat())
    assert str(info.value).startswith(message), str(info.value)


def test_consecutive_system_prompts_and_responses_raise_the_sdks_runtime_error():
    chat = lms.Chat("one")
    with pytest.raises(lms.LMStudioRuntimeError, match=r"^Multi-part or consecutive system prompts are not supported"):
        chat.add_system_prompt("two")
    chat.add_user_message("hi")
    chat.add_assistant_response("hello")
    with pytest.raises(lms.LMStudioRuntimeError, match="^Multi-part or consecutive assistant responses"):
        chat.add_assistant_response("again")


def test_a_chat_with_files_is_refused_at_prediction_time_naming_the_model(small):
    """No model lmfast runs has vision yet: a file part is an error naming the model, never dropped."""
    chat = lms.Chat()
    chat.add_user_message("What is in this picture?", images=[FILE_HANDLE])
    calls = [lambda: small.respond(chat, config=SHORT), lambda: small.respond_stream(chat, config=SHORT),
             lambda: small.apply_prompt_template(chat), lambda: small.prewarm(chat),
             lambda: small.apply_prompt_template(chat.to_dict())]
    for call in calls:
        with pytest.raises(lms.LMStudioValueError, match=r"'parity-small' has no vision support.*'cat\.png'"):
            call()
    text_only = lms.Chat()
    text_only.add_user_message("What is in this picture?")
    assert small.respond(text_only, config=SHORT).content  # the same turn without the file answers


def _load_args(model: str, host: str = "127.0.0.1"):
    import argparse

    return argparse.Namespace(model=model, host=host, port=1, identifier=None, ttl=None, context_length=None,
                              gpu=None, api_key=None, api_key_file=None)


def test_cli_load_sends_a_file_in_a_models_folder_as_its_key(models_dir, monkeypatch, capsys):
    from lmfast.cli import _remote

    folder, target = models_dir
    sent = []
    monkeypatch.setattr(_remote, "call", lambda args, method, path, body=None, timeout=600:
                        sent.append((path, body)) or {"identifier": body["model"]})
    assert _remote.cmd_load(_load_args(str(target))) == 0
    (path, body), = sent
    assert path == "/api/v0/models/load" and not os.path.isfile(body["model"])  # a key, not the path
    assert os.path.realpath(resolve(body["model"]).path) == os.path.realpath(target)


def test_cli_load_of_a_file_the_server_cannot_see_says_what_to_do(tmp_path, monkeypatch):
    from lmfast.cli import _remote
    from lmfast.cli._common import UserError

    stray = tmp_path / "stray-model.gguf"
    stray.write_bytes(b"GGUF")
    monkeypatch.setattr(_remote, "call", lambda *a, **k: pytest.fail("no request should be sent"))
    with pytest.raises(UserError, match=r"not in a models folder.*lmfast import .*stray-model\.gguf.*"
                                        r"lmfast load stray-model.*lmfast serve --model"):
        _remote.cmd_load(_load_args(str(stray)))
    with pytest.raises(UserError, match=r"file on this machine.*its own folders.*lmfast load stray-model --host"):
        _remote.cmd_load(_load_args(str(stray), host="192.0.2.7"))

# -- 6. presets -------------------------------------------------------------------------------------

@pytest.fixture
def presets(tmp_path, monkeypatch):
    own = tmp_path / "lmfast-presets"
    own.mkdir()
    (own / "terse.json").write_text(json.dumps({"name": "Terse", "config": {"temperature": 0, "maxTokens": 6}}))
    home = tmp_path / "home"
    studio = home / ".lmstudio" / "config-presets"
    studio.mkdir(parents=True)
    (studio / "pirate-captain.preset.json").write_text(json.dumps({
        "identifier": "@local:pirate-captain", "name": "Pirate Captain", "changed": True,
        "operation": {"fields": [
            {"key": "llm.prediction.systemPrompt", "value": "You are a pirate. Answer like one."},
            {"key": "llm.prediction.temperature", "value": 0},
            {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 12}},
            {"key": "llm.prediction.topPSampling", "value": {"checked": False, "value": 0.9}},
        ]},
        "load": {"fields": [{"key": "llm.load.contextLength", "value": 8192}]}}))
    monkeypatch.setenv("LMFAST_PRESETS_DIR", str(own))
    monkeypatch.setenv("HOME", str(home))
    return own, studio


def test_presets_configure_predictions(small, presets):
    result = small.respond("Tell me about ships.", preset="terse")
    assert result.prediction_config.max_tokens == 6 and result.stats.predicted_tokens_count <= 6
    # The request's own config goes over the preset's.
    longer = small.respond("Tell me about ships.", preset="Terse", config={"maxTokens": 9})
    assert longer.prediction_config.max_tokens == 9 and longer.prediction_config.temperature == 0
    assert small.complete("Ships are", preset="terse").prediction_config.max_tokens == 6


def test_lm_studio_presets_with_a_system_prompt(small, presets):
    with pytest.warns(UserWarning, match="llm.load.contextLength"):
        result = small.respond("Who are you?", preset="@local:pirate-captain")
    reference = lms.Chat("You are a pirate. Answer like one.")
    reference.add_user_message("Who are you?")
    # What the model saw is that chat (texts are not compared: a cached prefix may change greedy output).
    assert result.stats.prompt_tokens_count == len(small._tokens(small.apply_prompt_template(reference)))
    assert result.stats.predicted_tokens_count <= 12
    assert result.prediction_config.top_p_sampling is False
    # A chat with its own system prompt keeps it.
    own = lms.Chat("You are a librarian.")
    own.add_user_message("Who are you?")
    with pytest.warns(UserWarning):
        kept = small.respond(own, preset="Pirate Captain")
    assert kept.stats.prompt_tokens_count != result.stats.prompt_tokens_count


def test_an_unknown_preset_is_the_sdks_error(small, presets):
    with pytest.raises(lms.LMStudioPresetNotFoundError, match="(?i)no-such-preset.*terse"):
        small.respond("hi", preset="no-such-preset")
    with pytest.raises(lms.LMStudioPresetNotFoundError):
        small.act("hi", [add], preset="no-such-preset")

    async def main():
        model = lms.AsyncLLM(small)
        with pytest.raises(lms.LMStudioPresetNotFoundError):
            await model.respond("hi", preset="no-such-preset")
        return await model.respond("Tell me about ships.", preset="terse")
    assert asyncio.run(main()).prediction_config.max_tokens == 6


# -- 7. names -----------------------------------------------------------------------------------------

SDK_RUNTIME_NAMES = [
    "LlmLoadModelConfig", "LlmLoadModelConfigDict", "LlmPredictionConfig", "LlmPredictionConfigDict",
    "EmbeddingLoadModelConfig", "EmbeddingLoadModelConfigDict", "GpuSetting", "LlmSplitStrategy",
    "TextData", "FileHandle", "ChatHistoryData", "ToolCallResultData", "ModelQuery", "ModelLoadResult",
    "DownloadProgressUpdate", "SyncModelHandle", "AsyncDownloadedLlm", "AsyncDownloadedEmbeddingModel",
    "ValidationError", "LMStudioPresetNotFoundError", "LMStudioChannelClosedError", "LMStudioWebsocketError",
    "LMStudioUnknownMessageWarning", "SerializedLMSExtendedError",
    "AnyChatMessage", "AnyLoadConfig", "AnyModelSpecifier", "DictObject", "DictSchema", "FileHandleInput",
    "FileType", "LocalFileInput", "PredictionFirstTokenCallback", "PredictionFragmentCallback",
    "PredictionMessageCallback", "PromptProcessingCallback", "DownloadProgressCallback",
    "DownloadFinalizedCallback", "ResponseSchema", "ModelSpecifier",
]


def test_the_sdks_run_time_names_exist():
    missing = [n for n in SDK_RUNTIME_NAMES if not hasattr(lms, n)]
    assert missing == []
    assert set(SDK_RUNTIME_NAMES) <= set(lms.__all__)


def test_client_api_host_and_async_system(smollm2_path):
    assert lms.Client().api_host == "in-process"
    assert lms.Client("localhost:1234").api_host == "localhost:1234"

    async def main():
        async with lms.AsyncClient() as client:
            listed = await client.system.list_downloaded_models("llm")
            entry = next(m for m in listed if m.model_key == "smollm2-135m-instruct")
            assert isinstance(entry, lms.AsyncDownloadedLlm)
            model = await entry.model(config={"cpuThreads": 1, "contextLength": 256})
            assert isinstance(model, lms.AsyncLLM)
            return (await model.get_info()).model_key
    assert asyncio.run(main()) == "smollm2-135m-instruct"
