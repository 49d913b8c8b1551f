"""Rerankers end to end: a tiny random-weight BERT cross-encoder written in Hugging Face's layout
and converted by lmfast.models.convert_bert (tests/cross_encoder.py), scored in-process
(lms.reranker_model / client.reranker) and over HTTP (/v1/rerank), against llama.cpp's own
llama-embedding --pooling rank on the same file, built from the same objects."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import lmfast as lms
from lmfast import _reference
from lmfast.config import RERANK_PACK_TOKENS
from lmfast.models.gguf import model_type, read_metadata

from .cross_encoder import write_cross_encoder

QUERY = "what do cats eat?"
DOCS = ["Cats are carnivores and eat mostly meat.", "The stock market fell sharply on Tuesday.",
        "Kittens drink their mother's milk.", "A recipe for vegetable soup.",
        "Dry food and wet food are both fine for a cat.", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory) -> Path:
    return write_cross_encoder(tmp_path_factory.mktemp("rerank"))


@pytest.fixture(scope="module")
def reranker(client, reranker_path):
    model = client.reranker.load_new_instance(str(reranker_path), "tiny-reranker", config={"contextLength": 128})
    yield model
    model.unload()


def oracle_scores(model_path: Path, query: str, docs: list[str]) -> list[float]:
    """llama-embedding's rank scores of (query, doc) pairs, one per line (tab-separated pair, its
    --cls-separator), printed raw with 7 decimals; flash attention off, as lmfast's rerankers run."""
    assert not any("\t" in d or "\n" in d for d in [query, *docs])
    exe = _reference.program("llama-embedding")
    prompt = "\n".join(f"{query}\t{d}" for d in docs)
    res = subprocess.run([str(exe), "-m", str(model_path), "--pooling", "rank", "--embd-normalize", "-1",
                          "--embd-output-format", "raw", "-t", "1", "-c", "128", "-fa", "off", "-p", prompt],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    scores = [float(line) for line in res.stdout.split("\n") if line.strip()]
    assert len(scores) == len(docs), (res.stdout, res.stderr[-3000:])
    return scores


def test_the_converted_cross_encoder_is_a_reranker(reranker_path):
    meta = read_metadata(reranker_path)
    assert meta["bert.pooling_type"] == 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK
    assert meta["bert.classifier.output_labels"].length == 1  # one score per pair
    assert model_type(meta) == "reranker"


def test_scores_equal_llama_embedding_and_order_follows_them(reranker, reranker_path):
    expected = oracle_scores(reranker_path, QUERY, DOCS)
    ranked = reranker.rerank(QUERY, DOCS)
    assert sorted(r.index for r in ranked) == list(range(len(DOCS)))
    for r in ranked:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=1e-4), (r, expected)
        assert r.document == DOCS[r.index]
    scores = [r.relevance_score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert len(set(round(s, 3) for s in expected)) > 3, "random weights gave scores too alike to rank"


def test_pairs_are_tokenized_as_llama_server_does(reranker):
    native = reranker.instance.native()[1]
    q, d = reranker.tokenize([QUERY, DOCS[0]])  # each alone: [CLS] text [SEP]
    assert native.pair_tokens(QUERY, DOCS[0]) == q + d[1:]  # [CLS] query [SEP] document [SEP]


def test_top_n_and_edge_cases(reranker):
    full = reranker.rerank(QUERY, DOCS)
    assert reranker.rerank(QUERY, DOCS, top_n=2) == full[:2]
    assert reranker.rerank(QUERY, DOCS, top_n=100) == full
    assert reranker.rerank(QUERY, []) == []
    one = reranker.rerank(QUERY, (d for d in DOCS[:1]))  # any iterable of str
    assert [r.index for r in one] == [0]
    for bad in (dict(top_n=0), dict(top_n=True), dict(top_n=1.5)):
        with pytest.raises(lms.LMStudioValueError, match="top_n"):
            reranker.rerank(QUERY, DOCS, **bad)
    with pytest.raises(lms.LMStudioValueError, match="list of str"):
        reranker.rerank(QUERY, "one string")
    with pytest.raises(lms.LMStudioValueError, match="document 1"):
        reranker.rerank(QUERY, ["a", 2])
    with pytest.raises(lms.LMStudioValueError, match="longer than the reranker's context"):
        reranker.rerank(QUERY, ["word " * 200])


def test_one_hundred_documents_share_few_decode_calls(reranker):
    docs = [f"{DOCS[i % len(DOCS)]} Note {i}." for i in range(100)]
    before = reranker.decode_calls
    ranked = reranker.rerank(QUERY, docs)
    calls = reranker.decode_calls - before
    # Pairs are packed greedily, up to RERANK_PACK_TOKENS a call: ~17-token pairs, ~7 a call. Every
    # call but the last is then fuller than the budget less one pair, and none is over it.
    native = reranker.instance.native()[1]
    sizes = [len(native.pair_tokens(QUERY, d)) for d in docs]
    n_tokens, fill = sum(sizes), RERANK_PACK_TOKENS - max(sizes)
    assert -(-n_tokens // RERANK_PACK_TOKENS) <= calls <= -(-n_tokens // fill) + 1 and calls <= 25, (calls, n_tokens)
    alone = {r.index: r.relevance_score for r in reranker.rerank(QUERY, docs[:3])}
    for r in ranked:
        if r.index in alone:  # a document's score does not depend on its batch neighbours
            assert r.relevance_score == pytest.approx(alone[r.index], abs=1e-4)


def test_wrong_kinds_are_refused_clearly(client, reranker, reranker_path, smollm2_path, llm):
    with pytest.raises(lms.LMStudioValueError, match="it is an LLM"):
        client.reranker.model(str(smollm2_path))
    with pytest.raises(lms.LMStudioValueError, match="it is a reranker: use client.reranker"):
        client.llm.model(str(reranker_path))
    with pytest.raises(lms.LMStudioValueError, match="it is a reranker"):
        client.embedding.model(str(reranker_path))
    with pytest.raises(lms.LMStudioValueError, match="is a reranker.*cannot respond"):
        reranker.respond("hello")
    with pytest.raises(lms.LMStudioValueError, match="is a reranker.*does not embed"):
        reranker.embed("hello")
    with pytest.raises(AttributeError):
        llm.rerank  # noqa: B018 - an LLM handle has no rerank()
    # Below the metadata check: the native context refuses a model without rank pooling.
    model, _ = llm.instance.native()
    from lmfast import _core
    from lmfast.embedding import embedding_params
    from lmfast.config import EMBEDDING_LOAD_KEYS, with_defaults
    with pytest.raises(lms.LMStudioValueError, match="not a reranker"):
        _core.RerankContext(model, embedding_params(with_defaults({"contextLength": 64}, EMBEDDING_LOAD_KEYS)))


def test_info_load_config_and_unload(client, reranker_path):
    model = client.reranker.load_new_instance(str(reranker_path), "tiny-reranker-2", config={"contextLength": 64})
    try:
        info = model.get_info()
        assert info.type == "reranker" and info.context_length == 64 and info.architecture == "bert"
        assert model.get_load_config()["contextLength"] == 64
        assert model in client.reranker.list_loaded()
        assert client.handle_for(model.instance) == model
    finally:
        model.unload()
    with pytest.raises(lms.ModelUnloadedError):
        model.rerank(QUERY, DOCS)


# -- over HTTP -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(reranker_path, smollm2_path, tmp_path_factory):  # smollm2 fetched: JIT finds it by key
    pytest.importorskip("httpx")
    from .test_server import ServerProcess

    s = ServerProcess(["--model", str(reranker_path)],
                      tmp_path_factory.mktemp("rerank-server") / "server.log")
    s.wait_healthy()
    yield s
    assert s.stop() == 0, s.log()


def _post(server, path: str, body, **kw):
    import httpx

    return httpx.post(server.url + path, json=body, timeout=60, **kw)


def test_http_rerank_equals_in_process(server, reranker):
    res = _post(server, "/v1/rerank", {"query": QUERY, "documents": DOCS})
    assert res.status_code == 200, res.text
    body = res.json()
    local = reranker.rerank_with_usage(QUERY, DOCS)
    assert [r["index"] for r in body["results"]] == [r.index for r in local[0]]
    for got, want in zip(body["results"], local[0]):
        assert got["relevance_score"] == pytest.approx(want.relevance_score, abs=1e-5)
        assert got["document"] == {"text": DOCS[got["index"]]}
    assert body["usage"] == {"prompt_tokens": local[1], "total_tokens": local[1]}
    native = reranker.instance.native()[1]
    assert local[1] == sum(len(native.pair_tokens(QUERY, d)) for d in DOCS)
    # llama-server's alias, documents as objects (Jina/Cohere), top_n, no documents back
    alias = _post(server, "/rerank", {"query": QUERY, "documents": [{"text": d} for d in DOCS], "top_n": 2,
                                      "return_documents": False}).json()
    assert alias["results"] == [{k: r[k] for k in ("index", "relevance_score")} for r in body["results"][:2]]


def test_loaded_rerankers_are_listed_in_their_namespace(client, reranker):
    assert reranker.identifier in [m.identifier for m in client.list_loaded_models("reranker")]
    assert reranker.identifier in [m.identifier for m in client.list_loaded_models()]
    assert reranker.identifier not in [m.identifier for m in client.list_loaded_models("embedding")]
    with pytest.raises(lms.LMStudioValueError):
        client.list_loaded_models("rerankers")


def test_ls_lists_rerankers_as_their_own_type(reranker_path, smollm2_path, tmp_path):
    import json
    import os
    import sys

    (tmp_path / "aliases.json").write_text(json.dumps({"tiny-reranker": str(reranker_path),
                                                       "smol": str(smollm2_path)}))
    env = {**os.environ, "LMFAST_MODELS_DIR": str(tmp_path)}

    def ls(*flags: str) -> list[dict]:
        out = subprocess.run([sys.executable, "-m", "lmfast", "ls", "--json", *flags], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert [(r["modelKey"], r["type"]) for r in ls("--reranker")] == [("tiny-reranker", "reranker")]
    assert ("tiny-reranker", "reranker") in [(r["modelKey"], r["type"]) for r in ls()]
    assert "tiny-reranker" not in [r["modelKey"] for r in ls("--llm")]


def test_a_client_of_the_server_reranks_as_in_process(server, reranker):
    with lms.Client(f"127.0.0.1:{server.port}") as remote:
        there = remote.reranker.model()
        assert there.get_info().type == "reranker"
        assert [m.identifier for m in remote.list_loaded_models("reranker")] == [there.identifier]
        assert there in remote.list_loaded_models()
        assert not remote.list_loaded_models("embedding")
        ranked = there.rerank(QUERY, DOCS, top_n=3)
        with pytest.raises(lms.LMStudioValueError):
            there.rerank(QUERY, "one string")
    local = reranker.rerank(QUERY, DOCS)[:3]
    assert [(r.index, r.document) for r in ranked] == [(r.index, r.document) for r in local]
    for got, want in zip(ranked, local):
        assert got.relevance_score == pytest.approx(want.relevance_score, abs=1e-5)


@pytest.mark.parametrize("body, param", [
    ({"documents": DOCS}, "query"),
    ({"query": QUERY, "documents": []}, "documents"),
    ({"query": QUERY, "documents": "one string"}, "documents"),
    ({"query": QUERY, "documents": [1, 2]}, "documents"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n"),
    ({"query": QUERY, "documents": ["word " * 300]}, None),
    ({"query": QUERY, "documents": DOCS, "model": "smollm2-135m-instruct"}, "model"),
    ([1, 2], None),
])
def test_http_rerank_errors_are_openai_shaped_400s(server, body, param):
    res = _post(server, "/v1/rerank", body)
    assert res.status_code == 400, res.text
    err = res.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error"
    if param is not None:
        assert err.get("param", "").startswith(param) or param in err["message"], err
    if param == "model":
        assert err["code"] == "model_type_mismatch" and "LLM" in err["message"]


def test_http_a_reranker_cannot_chat(server):
    rerank_id = next(m["id"] for m in server_models(server) if m["type"] == "reranker")
    res = _post(server, "/v1/chat/completions", {"model": rerank_id, "messages": [{"role": "user", "content": "hi"}]})
    assert res.status_code == 400 and "/v1/rerank" in res.json()["error"]["message"], res.text
    res = _post(server, "/v1/embeddings", {"model": rerank_id, "input": "hi"})
    assert res.status_code == 400 and "reranker" in res.json()["error"]["message"], res.text


def server_models(server) -> list[dict]:
    import httpx

    return httpx.get(server.url + "/api/v0/models", timeout=30).json()["data"]
