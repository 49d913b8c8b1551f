"""Three scripts written for the LM Studio SDK, run verbatim with ``import lmfast as lms``
(the only change a port makes): one with presets, one with ``publisher/name`` keys and typed
configs, one that restores a saved chat with a file handle and a tool call and adds the tool's
result. The environment is what the scripts assume of LM Studio: the model downloaded (SmolLM2,
under the key the scripts use), the presets saved in LM Studio's presets folder."""
from __future__ import annotations

import dataclasses
import json

import pytest

import lmfast as lms
import lmfast.instance
from lmfast.config import LOAD_KEYS

PRESETS_SCRIPT = '''
import lmfast as lms

model = lms.llm("HuggingFaceTB/smollm2-135m-instruct")

chat = lms.Chat()
chat.add_user_message("Describe the sea in one sentence.")
result = model.respond(chat, preset="One Liner")
print("ANSWER:", result.content)
print("STOP:", result.stats.stop_reason)

for fragment in model.respond_stream("Name three fruits.", preset="one-liner", config={"maxTokens": 6}):
    print(fragment.content, end="", flush=True)
print()

try:
    model.respond("Hello", preset="does-not-exist")
except lms.LMStudioPresetNotFoundError as e:
    print("NO PRESET:", type(e).__name__)
'''

TYPED_CONFIG_SCRIPT = '''
import lmfast as lms

load_config = lms.LlmLoadModelConfig(context_length=1024, gpu=lms.GpuSetting(ratio=0.0), try_mmap=True)
prediction_config = lms.LlmPredictionConfig(temperature=0.0, max_tokens=12, stop_strings=["\\n\\n"])

with lms.Client() as client:
    model = client.llm.load_new_instance("HuggingFaceTB/smollm2-135m-instruct", "smol-typed", config=load_config)
    info = model.get_info()
    print("KEY:", info.model_key)
    loaded = model.get_load_config()
    print("CONTEXT:", loaded.context_length, type(loaded).__name__)
    # By identifier: this instance. By key: an instance of the key (in a test session another
    # client of the process may hold one whose identifier is the key itself, and that one wins).
    same = client.llm.model("smol-typed")
    print("SAME INSTANCE:", same == model)
    print("BY KEY:", client.llm.model("smollm2-135m-instruct").get_info().model_key)
    result = model.respond("What is the capital of France?", config=prediction_config)
    print("ANSWER:", result.content)
    print("MAX TOKENS:", result.prediction_config.max_tokens)
    print("CONFIG TYPES:", type(result.load_config).__name__, type(result.prediction_config).__name__)
    print("ROUND TRIP:", lms.LlmPredictionConfig.from_dict(prediction_config.to_dict()) == prediction_config)
'''

CHAT_SCRIPT = '''
import json
import lmfast as lms


def get_weather(city: str, unit: str = "celsius") -> str:
    """Gets the current weather in a city."""
    return json.dumps({"city": city, "temperature": 21, "unit": unit})


# A conversation saved by an earlier session: a photo, and the tool call the model made.
saved = {
    "messages": [
        {"role": "system", "content": "You are a helpful travel assistant."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is the weather like where this photo was taken?"},
            {"type": "file", "name": "lisbon.jpg", "identifier": "file-7f3a", "sizeBytes": 48211,
             "fileType": "image"},
        ]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check the weather in Lisbon."},
            {"type": "toolCallRequest", "toolCallRequest": {
                "type": "function", "id": "call_1", "name": "get_weather", "arguments": {"city": "Lisbon"}}},
        ]},
    ]
}

chat = lms.Chat.from_history(saved)
call = saved["messages"][-1]["content"][1]["toolCallRequest"]
print("REQUEST:", call["name"], call["arguments"])
chat.add_tool_result(lms.ToolCallResultData(tool_call_id=call["id"], content=get_weather(**call["arguments"])))



def text_only(chat):
    """The chat without its file parts: SmolLM2 has no vision, and a chat holding files is refused."""
    history = chat.to_dict()
    for m in history["messages"]:
        if isinstance(m["content"], list):
            m["content"] = [p for p in m["content"] if p.get("type") != "file"]
    return lms.Chat.from_history(history)


model = lms.llm("smollm2-135m-instruct")
try:
    model.respond(chat)
except lms.LMStudioValueError as e:
    print("REFUSED:", e)
result = model.respond(text_only(chat), config={"temperature": 0.0, "maxTokens": 24})
chat.add_assistant_response(result)
print("ANSWER:", result.content)

# The next turn: another photo, and the assistant's follow-up call recorded by hand.
photo = lms.FileHandle(name="porto.jpg", identifier="file-9c1d", size_bytes=51234, file_type="image")
chat.add_user_message("And here?", images=[photo])
chat.add_assistant_response("Checking Porto.", [lms.ToolCallRequest(id="call_2", name="get_weather",
                                                                     arguments={"city": "Porto"})])
chat.add_tool_result({"tool_call_id": "call_2", "content": get_weather("Porto")})
print("PHOTO:", photo.name, photo.size_bytes, photo.file_type)
print(chat)
'''


@pytest.fixture
def one_thread(monkeypatch):
    """Models the scripts load get one decode thread (the scripts, written for LM Studio, do not
    set lmfast's cpuThreads; this machine is shared)."""
    monkeypatch.setattr(lmfast.instance, "LOAD_KEYS",
                        tuple(dataclasses.replace(k, default=1) if k.name == "cpuThreads" else k for k in LOAD_KEYS))


@pytest.fixture
def default_model(one_thread, smollm2_path):
    """SmolLM2 loaded in the default client, as a model LM Studio has loaded already."""
    before = {m.identifier for m in lms.list_loaded_models()}
    model = lms.get_default_client().llm.model("smollm2-135m-instruct", config={"cpuThreads": 1})
    yield model
    if model.identifier not in before:  # loaded models belong to the process: leave other tests' alone
        model.unload()


def run(script: str, capsys) -> tuple[dict[str, str], dict]:
    """Runs a script as __main__; its "KEY: value" output lines, and its globals."""
    namespace = {"__name__": "__main__"}
    exec(compile(script, "<lm studio script>", "exec"), namespace)
    out = capsys.readouterr().out
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.splitlines()
            if ":" in line and not line.startswith(" ")}, namespace


def test_presets_script(default_model, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    presets = home / ".lmstudio" / "config-presets"
    presets.mkdir(parents=True)
    (presets / "one-liner.preset.json").write_text(json.dumps({
        "identifier": "@local:one-liner", "name": "One Liner",
        "operation": {"fields": [
            {"key": "llm.prediction.systemPrompt", "value": "Answer in one short sentence."},
            {"key": "llm.prediction.temperature", "value": 0},
            {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 20}},
            {"key": "llm.prediction.stopStrings", "value": ["\n\n"]},
        ]}}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LMFAST_PRESETS_DIR", str(tmp_path / "none"))
    out, namespace = run(PRESETS_SCRIPT, capsys)
    result = namespace["result"]
    assert (result.prediction_config.temperature, result.prediction_config.max_tokens,
            result.prediction_config.stop_strings) == (0, 20, ["\n\n"])
    assert result.stats.predicted_tokens_count <= 20 and out["STOP"] == result.stats.stop_reason
    # The preset's system prompt is in what the model saw (texts are not compared with a second
    # run: a cached prefix may change greedy output).
    reference = lms.Chat("Answer in one short sentence.")
    reference.add_user_message("Describe the sea in one sentence.")
    assert result.stats.prompt_tokens_count == len(default_model._tokens(default_model.apply_prompt_template(reference)))
    assert out["ANSWER"] == (result.content.strip().splitlines() or [""])[0].strip()
    assert out["NO PRESET"] == "LMStudioPresetNotFoundError"


def test_publisher_keys_and_typed_configs_script(one_thread, smollm2_path, capsys):
    out, _ = run(TYPED_CONFIG_SCRIPT, capsys)
    assert out["KEY"] == "smollm2-135m-instruct"
    assert out["CONTEXT"] == "1024 LlmLoadModelConfig"
    assert out["SAME INSTANCE"] == "True"
    assert out["BY KEY"] == "smollm2-135m-instruct"
    assert out["MAX TOKENS"] == "12"
    assert out["CONFIG TYPES"] == "LlmLoadModelConfig LlmPredictionConfig"
    assert out["ROUND TRIP"] == "True"
    assert out["ANSWER"]


def test_chat_with_tool_results_and_file_handles_script(default_model, capsys):
    out, namespace = run(CHAT_SCRIPT, capsys)
    assert out["REQUEST"] == "get_weather {'city': 'Lisbon'}"
    assert out["PHOTO"] == "porto.jpg 51234 image"
    chat = namespace["chat"]
    history = chat.to_dict()["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "tool", "assistant", "user",
                                            "assistant", "tool"]
    assert history[1]["content"][1] == {"type": "file", "name": "lisbon.jpg", "identifier": "file-7f3a",
                                        "sizeBytes": 48211, "fileType": "image"}
    assert history[5]["content"][1] == {"type": "file", "name": "porto.jpg", "identifier": "file-9c1d",
                                        "sizeBytes": 51234, "fileType": "image"}
    assert history[2]["content"][1]["toolCallRequest"]["arguments"] == {"city": "Lisbon"}
    assert history[6]["content"][1] == {"type": "toolCallRequest", "toolCallRequest": {
        "type": "function", "id": "call_2", "name": "get_weather", "arguments": {"city": "Porto"}}}
    assert history[3]["content"] == [{"type": "toolCallResult", "toolCallId": "call_1",
                                      "content": '{"city": "Lisbon", "temperature": 21, "unit": "celsius"}'}]
    assert history[7]["content"][0]["toolCallId"] == "call_2"
    # The answer is the model's reply to the restored chat, the tool's result in its prompt (the
    # text is not compared with a second run: greedy output may differ once the prefix is cached).
    result = namespace["result"]
    assert history[4]["content"] == [{"type": "text", "text": result.content}]
    # A text model refuses the chat while it holds the photo, naming itself and the file.
    assert "smollm2-135m-instruct" in out["REFUSED"] and "lisbon.jpg" in out["REFUSED"], out
    text_only = namespace["text_only"]
    prompt = default_model.apply_prompt_template(text_only(lms.Chat.from_history({"messages": history[:4]})))
    assert '{"city": "Lisbon", "temperature": 21, "unit": "celsius"}' in prompt and "travel assistant" in prompt
    assert result.stats.prompt_tokens_count == len(default_model._tokens(prompt))
    # str(chat) is the SDK's "Chat.from_history({...})", and it reads back.
    printed = str(chat)
    assert printed.startswith("Chat.from_history(")
    assert lms.Chat.from_history(json.loads(printed[len("Chat.from_history("):-1])).to_dict() == chat.to_dict()
