"""Model folders, keys, aliases, the download listing and get_model_info."""
import json
import os
import shutil

import pytest

import lmfast as lms
from lmfast.models.registry import model_key_for, resolve


@pytest.fixture
def models_dir(tmp_path, smollm2_path, monkeypatch):
    """A models folder in LM Studio's layout holding SmolLM2 (hard-linked, not copied)."""
    dest = tmp_path / "HuggingFaceTB" / "SmolLM2-135M-Instruct-GGUF" / smollm2_path.name
    dest.parent.mkdir(parents=True)
    try:
        os.link(smollm2_path, dest)
    except OSError:
        shutil.copyfile(smollm2_path, dest)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "broken-Q4_0.gguf").write_bytes(b"GGUF" + b"\0" * 10)  # not loadable
    monkeypatch.setenv("LMFAST_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no LM Studio folders
    return tmp_path


@pytest.mark.parametrize("name,key", [
    ("Qwen2.5-7B-Instruct-1M-Q4_K_M.gguf", "qwen2.5-7b-instruct-1m"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
    ("Llama-3.2-1B-Instruct-f16.gguf", "llama-3.2-1b-instruct"),
    ("model-00001-of-00003.gguf", "model"),
    ("Meta-Llama-3.1-8B-Instruct-IQ4_XS.gguf", "meta-llama-3.1-8b-instruct"),
])
def test_keys_are_derived_like_lm_studio(name, key):
    assert model_key_for(name) == key


def test_list_downloaded(models_dir):
    downloaded = lms.list_downloaded_models()
    assert [d.model_key for d in downloaded] == ["smollm2-135m-instruct"]  # the broken file is left out
    d = downloaded[0]
    assert isinstance(d, lms.DownloadedLlm) and d.type == "llm"
    assert d.path == "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf"
    info = d.info
    assert isinstance(info, lms.LlmInfo)
    assert info.architecture == "llama" and info.params_string == "135M" and info.format == "gguf"
    assert info.max_context_length == 8192 and info.size_bytes == os.path.getsize(models_dir / d.path)
    assert repr(d).startswith("DownloadedLlm(model_key='smollm2-135m-instruct'")
    assert lms.list_downloaded_models("embedding") == []
    with lms.Client() as client:
        assert [x.model_key for x in client.llm.list_downloaded()] == ["smollm2-135m-instruct"]
        # A new instance: model() would return the fixtures' instance of this key, loaded already.
        model = client.llm.list_downloaded()[0].load_new_instance(config={"contextLength": 512})
        assert model.get_info().context_length == 512
        assert client.llm.list_downloaded()[0].model().get_info().model_key == "smollm2-135m-instruct"
        assert model.get_info().model_key == "smollm2-135m-instruct"
        again = client.llm.list_downloaded()[0].load_new_instance(instance_identifier="second")
        assert again.identifier == "second" and again != model
    with pytest.raises(lms.LMStudioValueError, match="namespace"):
        lms.list_downloaded_models("vision")


def test_aliases(models_dir, smollm2_path):
    (models_dir / "aliases.json").write_text(json.dumps({
        "qwen2.5-7b-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf",
        "Tiny-Chat": "smollm2-135m-instruct",
        "absolute": str(smollm2_path),
    }))
    assert resolve("qwen2.5-7b-instruct").path.samefile(smollm2_path)
    assert resolve("tiny-chat").model_key == "tiny-chat" and resolve("tiny-chat").path.samefile(smollm2_path)
    assert resolve("absolute").path == smollm2_path.resolve()
    keys = [d.model_key for d in lms.list_downloaded_models()]
    assert keys == ["absolute", "qwen2.5-7b-instruct", "smollm2-135m-instruct", "tiny-chat"]
    with lms.Client() as client:
        model = client.llm.model("qwen2.5-7b-instruct", config={"contextLength": 512})
        info = model.get_info()
        assert info.model_key == info.identifier == "qwen2.5-7b-instruct"
        assert client.llm.get_model_info("qwen2.5-7b-instruct") == info
        assert client.llm.get_model_info({"identifier": "qwen2.5-7b-instruct"}) == info
        assert "Paris" in model.respond("What is the capital of France?", config={"temperature": 0}).content
        with pytest.raises(lms.LMStudioModelNotFoundError):
            client.llm.get_model_info("not-loaded")


@pytest.mark.parametrize("content,error", [
    ("{not json", lms.LMStudioValueError),
    ('["a list"]', lms.LMStudioValueError),
    ('{"x": "missing/file.gguf"}', lms.LMStudioModelNotFoundError),
])
def test_bad_aliases_file(models_dir, content, error):
    (models_dir / "aliases.json").write_text(content)
    with pytest.raises(error, match="aliases|alias"):
        resolve("x")


def test_unknown_key_names_closest(models_dir):
    with pytest.raises(lms.LMStudioModelNotFoundError, match="smollm2-135m-instruct"):
        resolve("smollm2-135m-instrct")


def test_configure_default_client_after_creation_raises():
    lms.get_default_client()
    with pytest.raises(lms.LMStudioClientError):
        lms.configure_default_client("localhost:1234")


def test_sync_api_timeout_round_trip():
    old = lms.get_sync_api_timeout()
    try:
        lms.set_sync_api_timeout(5)
        assert lms.get_sync_api_timeout() == 5.0
        lms.set_sync_api_timeout(None)
        assert lms.get_sync_api_timeout() is None
        with pytest.raises(lms.LMStudioValueError):
            lms.set_sync_api_timeout(-1)
    finally:
        lms.set_sync_api_timeout(old)


def test_model_kind_is_read_again_when_the_file_changes(smollm2_path, tmp_path):
    """model_type_of remembers a file's kind by its identity (device, inode, size, mtime): a
    file replaced under the same name, as a download or a copy does, is read again."""
    from lmfast.models.registry import fetch_converted, model_type_of

    path = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_path, path)
    assert model_type_of(path) == "llm"
    assert model_type_of(path) == "llm"  # from the cache
    staged = tmp_path / "staged.gguf"
    shutil.copyfile(fetch_converted("all-minilm-l6-v2").path, staged)
    os.replace(staged, path)
    assert model_type_of(path) == "embedding"
    with pytest.raises(lms.LMStudioValueError, match="it is an embedding model"):
        lms.llm(str(path))
