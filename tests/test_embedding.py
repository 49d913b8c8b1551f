"""Embedding models end to end: all-MiniLM-L6-v2, converted from its safetensors by
lmfast.models.convert_bert, against sentence-transformers' own vectors
(tests/data/minilm_reference.json, written by scripts/make_embedding_reference.py)."""
import json
import math
import threading
from pathlib import Path

import pytest

import lmfast as lms
from lmfast.models.registry import CONVERTED_MODELS, fetch_converted, model_key_for

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))
SENTENCES = [e["text"] for e in REFERENCE["sentences"]]
KEY = "all-minilm-l6-v2"


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The converted GGUF in the lmfast cache (fetched and converted once, reused while current)."""
    return fetch_converted(KEY).path


@pytest.fixture(scope="session")
def emb(client, minilm_path):
    return client.embedding.model(KEY)


def test_conversion_is_a_bert_gguf(minilm_path):
    from lmfast.models.gguf import model_type, read_metadata

    meta = read_metadata(minilm_path)
    assert meta["general.architecture"] == "bert"
    assert meta["bert.pooling_type"] == 1  # mean
    assert meta["bert.attention.causal"] is False
    assert meta["tokenizer.ggml.model"] == "bert"
    assert model_type(meta) == "embedding"
    assert model_key_for(minilm_path) == KEY
    assert minilm_path.name == Path(CONVERTED_MODELS[KEY].dest).name


@pytest.mark.slow
def test_matches_sentence_transformers(emb):
    cosines = []
    for entry in REFERENCE["sentences"]:
        vec = emb.embed(entry["text"])
        cosines.append(cosine(vec, entry["embedding"]))
    worst = min(range(len(cosines)), key=cosines.__getitem__)
    assert cosines[worst] >= 0.999, f"cosine {cosines[worst]:.6f} for {SENTENCES[worst]!r}"


# Batched and single encodings are not bit-identical: llama.cpp's matmul kernels
# round differently for different batch shapes (the same text in rows 0 and 1 of
# one batch already differs by ~2e-5 per component). Measured: at most ~1.5e-4 per
# component, cosine > 0.9999999; the tolerance leaves room for other CPUs.
BATCH_TOL = 5e-4


def assert_close(u, v, what=""):
    assert max(abs(a - b) for a, b in zip(u, v)) < BATCH_TOL, what
    assert cosine(u, v) > 0.99999, what


def test_batch_equals_one_by_one(emb):
    batch = emb.embed(SENTENCES)
    assert len(batch) == len(SENTENCES)
    for text, vb in zip(SENTENCES, batch):
        assert_close(vb, emb.embed(text), text)
    # A generator works too, and order is kept with texts of very different lengths.
    again = emb.embed(s for s in reversed(SENTENCES))
    for text, x, y in zip(reversed(SENTENCES), again, reversed(batch)):
        assert_close(x, y, text)
    # Different texts really give different vectors (the tolerance is far below that).
    assert max(abs(a - b) for a, b in zip(batch[0], batch[1])) > 100 * BATCH_TOL


def test_batch_is_encoded_in_few_calls(emb):
    ctx = emb._instance.native()[1]
    before = ctx.decode_calls
    emb.embed([f"sentence number {i}" for i in range(40)])
    assert ctx.decode_calls - before == 1  # 40 short texts fit one batch
    before = ctx.decode_calls
    long_text = REFERENCE["sentences"][-1]["text"]
    n = emb.count_tokens(long_text)
    texts = [long_text] * (ctx.n_batch // n + 2)
    vectors = emb.embed(texts)  # more tokens than one batch holds: several calls, same vectors
    assert ctx.decode_calls - before >= 2
    for v in vectors:
        assert_close(v, vectors[0])


def test_unit_length_and_dimension(emb):
    for vec in emb.embed(SENTENCES):
        assert len(vec) == REFERENCE["dimension"] == 384
        assert abs(math.sqrt(sum(x * x for x in vec)) - 1.0) < 1e-5
    assert emb.embed([]) == []


def test_similar_texts_are_closer(emb):
    a, b, c = emb.embed(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell."])
    assert cosine(a, b) > cosine(a, c) + 0.3


def test_tokenize_matches_hf_tokenizer(emb):
    # As LM Studio counts them: the ids the model encodes, begin and end tokens included.
    for entry in REFERENCE["sentences"]:
        ids = entry["token_ids"]
        assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
        assert emb.tokenize(entry["text"]) == ids, entry["text"]
        assert emb.count_tokens(entry["text"]) == len(ids)
    assert emb.tokenize(["Hello, world!", "Hi"]) == [emb.tokenize("Hello, world!"), emb.tokenize("Hi")]


def test_the_context_length_counts_what_tokenize_counts(client, minilm_path):
    """A text of exactly contextLength tokens by count_tokens() embeds; one more token is refused."""
    emb = client.embedding.load_new_instance(str(minilm_path), "minilm-ctx-16", config={"contextLength": 16})
    try:
        text = " ".join(["word"] * 14)
        assert emb.count_tokens(text) == 16
        assert len(emb.embed(text)) == 384
        with pytest.raises(lms.LMStudioValueError, match="17 tokens long.*context of 16 tokens"):
            emb.embed(text + " word")
    finally:
        emb.unload()


def test_info_and_load_config(emb, minilm_path):
    info = emb.get_info()
    assert isinstance(info, lms.EmbeddingModelInstanceInfo)
    d = info.to_dict()
    assert len(d) == 12
    assert d["type"] == "embedding"
    assert d["architecture"] == "bert"
    assert d["modelKey"] == KEY
    assert d["identifier"] == emb.identifier == KEY
    assert d["contextLength"] == emb.get_context_length() == 512
    assert d["maxContextLength"] == 512
    assert d["displayName"] == "all-MiniLM-L6-v2"
    assert d["format"] == "gguf"
    assert d["sizeBytes"] == minilm_path.stat().st_size
    assert d["paramsString"] in ("22M", "23M")  # 22.7 million parameters
    assert "vision" not in d and "trainedForToolUse" not in d
    assert lms.EmbeddingModelInstanceInfo.from_dict(d) == info
    assert repr(emb) == f"EmbeddingModel(identifier='{KEY}')"

    cfg = emb.get_load_config()
    assert set(cfg) == {"contextLength", "gpu", "keepModelInMemory", "tryMmap", "ropeFrequencyBase",
                        "ropeFrequencyScale"}
    assert cfg["contextLength"] == 512


def test_too_long_text_raises(emb):
    long_text = "word " * 600
    with pytest.raises(lms.LMStudioValueError, match=r"602 tokens.*context of 512"):
        emb.embed(long_text)
    with pytest.raises(lms.LMStudioValueError, match="text 1 is"):
        emb.embed(["short", long_text])
    assert len(emb.embed("still works")) == 384


def test_bad_input_raises(emb):
    with pytest.raises(lms.LMStudioValueError):
        emb.embed(["ok", 3])
    with pytest.raises(lms.LMStudioValueError):
        emb.embed(b"bytes")
    with pytest.raises(lms.LMStudioValueError):
        emb.count_tokens(["a"])


def test_smaller_context_and_unload(client, minilm_path):
    model = client.embedding.load_new_instance(KEY, "minilm-small", config={"contextLength": 32})
    try:
        assert model.identifier == "minilm-small"
        assert model.get_context_length() == 32
        with pytest.raises(lms.LMStudioValueError, match="context of 32"):
            model.embed("word " * 40)
        assert len(model.embed("fits")) == 384
    finally:
        model.unload()
    with pytest.raises(lms.ModelUnloadedError):
        model.embed("after unload")
    with pytest.raises(lms.ModelUnloadedError):
        model.get_info()
    assert "minilm-small" not in [m.identifier for m in client.embedding.list_loaded()]


def test_unknown_and_llm_only_config_keys(client, minilm_path):
    with pytest.raises(lms.InvalidConfigError, match="flashAttention"):
        client.embedding.load_new_instance(KEY, config={"flashAttention": True})
    with pytest.raises(lms.InvalidConfigError):
        client.embedding.load_new_instance(KEY, config={"contextLength": "long"})


def test_namespaces(client, emb, llm):
    # The same model key gives the loaded instance back; a new identifier is free,
    # a taken one is refused.
    assert client.embedding.model(KEY) == emb
    assert client.embedding.model() in client.embedding.list_loaded()
    second = client.embedding.load_new_instance(KEY)
    try:
        assert second.identifier == f"{KEY}:2"
        assert second != emb
        with pytest.raises(lms.LMStudioValueError, match="already loaded"):
            client.embedding.load_new_instance(KEY, f"{KEY}:2")
        with pytest.raises(lms.LMStudioValueError, match="already loaded"):
            client.embedding.load_new_instance(KEY, llm.identifier)  # identifiers are shared with LLMs
        assert second.embed("same weights") == emb.embed("same weights")
    finally:
        second.unload()

    # Kinds are kept apart, with an error that names the right namespace.
    with pytest.raises(lms.LMStudioValueError, match=r"embedding model: use client\.embedding\.model"):
        client.llm.model(KEY)
    with pytest.raises(lms.LMStudioValueError, match=r"it is an LLM: use client\.llm\.model"):
        client.embedding.model(llm._instance.model_file.path)
    assert emb not in client.llm.list_loaded()
    assert llm not in client.embedding.list_loaded()
    with pytest.raises(lms.LMStudioModelNotFoundError):
        client.llm.unload(emb.identifier)

    everything = client.list_loaded_models()
    kinds = [type(m).__name__ for m in everything]
    assert "LLM" in kinds and "EmbeddingModel" in kinds
    assert kinds == sorted(kinds, key=lambda k: k != "LLM")  # LLMs first
    assert all(isinstance(m, lms.EmbeddingModel) for m in client.list_loaded_models("embedding"))
    with pytest.raises(lms.LMStudioValueError):
        client.list_loaded_models("vision")


def test_convenience_api(emb):
    # The convenience API is the default client's, which sees the instance another client loaded.
    assert lms.embedding_model(KEY) == emb
    assert lms.embedding_model() in lms.list_loaded_models("embedding")
    model = lms.get_default_client().embedding.load_new_instance(KEY, "convenience", ttl=None)
    try:
        assert isinstance(model, lms.EmbeddingModel)
        assert lms.embedding_model("convenience") == model
        assert model in lms.list_loaded_models("embedding")
        assert len(model.embed("convenience")) == 384
    finally:
        model.unload()
    with pytest.raises(lms.ModelUnloadedError):
        model.embed("gone")
    assert len(emb.embed("still here")) == 384  # the other instance stays


def test_threads_share_one_model(emb):
    expected = emb.embed(SENTENCES[:4])
    results, errors = [], []

    def work():
        try:
            for _ in range(2):
                results.append(emb.embed(SENTENCES[:4]))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 6
    for r in results:
        for a, b in zip(r, expected):
            assert a == b  # the same batch shape: bit-identical


def test_ttl_unloads_idle_embedding_model(minilm_path):
    with lms.Client() as c:
        # A new instance: model(KEY) returns one loaded already (another client's), as it is.
        model = c.embedding.load_new_instance(KEY, "minilm-ttl", ttl=0.2)
        assert len(model.embed("ttl")) == 384
        import time

        deadline = time.monotonic() + 5
        while model in c.embedding.list_loaded() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert model not in c.embedding.list_loaded()
        with pytest.raises(lms.ModelUnloadedError):
            model.embed("expired")
