"""Bad input raises a clear exception, and the process and the loaded model survive."""
import shutil

import pytest

import lmfast as lms

from .conftest import GREEDY


def test_missing_path(client, tmp_path):
    with pytest.raises(lms.LMStudioModelNotFoundError, match="not found"):
        client.llm.model(str(tmp_path / "nope.gguf"))


def test_unknown_model_key_names_close_keys(client):
    with pytest.raises(lms.LMStudioModelNotFoundError, match="smollm2-135m-instruct"):
        client.llm.model("smollm2-135m-instruc")


def test_not_a_gguf_file(client, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"this is not a model, just some text " * 100)
    with pytest.raises(lms.ModelLoadError, match="bad magic"):
        client.llm.model(str(bad))


def test_empty_file(client, tmp_path):
    bad = tmp_path / "empty.gguf"
    bad.write_bytes(b"")
    with pytest.raises(lms.ModelLoadError, match="header"):
        client.llm.model(str(bad))


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_truncated_gguf(client, smollm2_path, tmp_path, fraction):
    size = smollm2_path.stat().st_size
    bad = tmp_path / "truncated.gguf"
    with open(smollm2_path, "rb") as src, open(bad, "wb") as dst:
        dst.write(src.read(int(size * fraction)))
    with pytest.raises(lms.ModelLoadError):
        client.llm.model(str(bad))


def test_header_only_gguf(client, smollm2_path, tmp_path):
    bad = tmp_path / "header.gguf"
    with open(smollm2_path, "rb") as src:
        bad.write_bytes(src.read(4096))
    with pytest.raises(lms.ModelLoadError):
        client.llm.model(str(bad))


def test_failed_loads_leave_no_instance(client, tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF")
    before = [m.identifier for m in client.llm.list_loaded()]
    with pytest.raises(lms.ModelLoadError):
        client.llm.model(str(bad))
    assert [m.identifier for m in client.llm.list_loaded()] == before


def test_unknown_config_key(llm):
    with pytest.raises(lms.InvalidConfigError, match="temperature"):
        llm.respond("hi", config={"temprature": 0.5})
    with pytest.raises(lms.LMStudioValueError, match="unknown load config key"):
        lms.Client().llm.model("smollm2-135m-instruct", config={"contextLenght": 512})


@pytest.mark.parametrize("config", [
    {"maxTokens": -1}, {"maxTokens": -5}, {"maxTokens": 0}, {"maxTokens": 1.5},
    {"temperature": -0.1}, {"topPSampling": 1.5}, {"minPSampling": -1},
    {"repeatPenalty": 0}, {"stopStrings": "not a list"}, {"topKSampling": "forty"},
])
def test_bad_prediction_values(llm, config):
    with pytest.raises(lms.LMStudioValueError):
        llm.respond("hi", config=config)


def test_snake_case_aliases(llm):
    a = llm.complete("The sky is", config={"temperature": 0, "max_tokens": 5})
    b = llm.complete("The sky is", config={"temperature": 0, "maxTokens": 5})
    assert a.content == b.content and a.stats.predicted_tokens_count == 5
    with pytest.raises(lms.InvalidConfigError, match="twice"):
        llm.complete("x", config={"max_tokens": 5, "maxTokens": 5})


def test_prompt_longer_than_context(client, smollm2_path):
    small = client.llm.load_new_instance(str(smollm2_path), "small-ctx", config={"contextLength": 64})
    try:
        assert small.get_context_length() == 64
        with pytest.raises(lms.LMStudioValueError, match="context length"):
            small.complete("word " * 200)
        # Still usable after the error.
        assert small.complete("The sky is", config={**GREEDY, "maxTokens": 4}).content
        # Generation that reaches the end of the context stops there.
        r = small.complete("one two three four five six seven eight nine ten",
                           config={**GREEDY, "repeatPenalty": False})
        assert r.stats.stop_reason in ("contextLengthReached", "eosFound")
        assert r.stats.prompt_tokens_count + r.stats.predicted_tokens_count <= 64
    finally:
        small.unload()


def test_empty_history(llm):
    with pytest.raises(lms.LMStudioValueError):
        llm.respond({"messages": []})


def test_model_survives_all_of_the_above(llm):
    assert "paris" in llm.respond("What is the capital of France?", config={**GREEDY, "maxTokens": 16}).content.lower()

