"""JSON-schema-to-grammar work is bounded and runs without the GIL (issue 36).

llama.cpp's converter takes time that grows with the cube of an object's optional properties
(1,000 took ~5 s and 3,000 ~43 s, holding the GIL, so a whole server froze). csrc/schema_budget.h
now refuses a schema past its limits before any conversion, naming the limit, and the conversion
runs with the GIL released: the in-process API, other Python threads and the HTTP server's
/health all keep going."""
from __future__ import annotations

import json
import re
import threading
import time

import pytest

import lmfast as lms
from lmfast import _core, structured


def object_schema(n: int, *, required: bool = False, prefix: str = "p") -> dict:
    props = {f"{prefix}{i}": {"type": "string"} for i in range(n)}
    schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(props)
    return schema


def json_setting(schema: dict) -> dict:
    return {"type": "json", "jsonSchema": schema}


BOMBS = {  # properties -> the limit its refusal names
    1000: "1000 optional properties, more than the 256 allowed in one object",
    3000: "3000 optional properties, more than the 256 allowed in one object",
    50000: "bytes, more than the 1048576 allowed",
}


@pytest.mark.parametrize("n", sorted(BOMBS))
def test_grammar_bombs_are_refused_quickly_naming_the_limit(n):
    t0 = time.monotonic()
    with pytest.raises(lms.LMStudioValueError) as e:
        structured.grammar(json_setting(object_schema(n)))
    elapsed = time.monotonic() - t0
    assert "JSON schema is too large to turn into a grammar" in str(e.value)
    assert BOMBS[n] in str(e.value)
    assert elapsed < 2.0, elapsed  # instead of seconds to minutes of conversion


@pytest.mark.parametrize("schema, limit", [
    ({"enum": [f"v{i}" for i in range(20000)]}, "more than 10000 JSON values (nodes)"),
    (object_schema(10000, required=True), "more than 10000 JSON values (nodes)"),
    (json.loads('{"type": "array", "items": ' * 100 + '{"type": "string"}' + "}" * 100), "nests deeper than 64"),
    ({"type": "object", "required": ["a", "b", "c"], "properties": {
        k: object_schema(200, prefix=k) for k in ("a", "b", "c")}}, "more than 512 optional properties in all"),
], ids=["nodes-enum", "nodes-required", "depth", "optional-total"])
def test_each_limit_is_named(schema, limit):
    with pytest.raises(lms.LMStudioValueError, match=re.escape(limit)):
        structured.grammar(json_setting(schema))


def test_deeper_than_python_can_serialise_is_a_clear_error():
    schema: dict = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(lms.LMStudioValueError, match="nests too deeply"):
        structured.grammar(json_setting(schema))


@pytest.mark.parametrize("schema", [
    object_schema(256),                      # the most optional properties one object may have
    object_schema(3000, required=True),      # required properties are cheap
    {"type": "object", "required": ["a", "b"], "properties": {k: object_schema(256, prefix=k) for k in "ab"}},
], ids=["256-optional", "3000-required", "2x256-optional"])
def test_schemas_within_the_limits_convert_in_bounded_time(schema):
    t0 = time.monotonic()
    grammar = _core.json_schema_to_grammar(json.dumps(schema))
    elapsed = time.monotonic() - t0
    assert "root ::=" in grammar
    # Measured 0.27 / 0.21 / 0.62 s on a loaded 2-core machine; ten times that is still bounded.
    assert elapsed < 10.0, elapsed


def test_other_threads_run_during_a_conversion():
    """The conversion releases the GIL: a thread that ticks every millisecond keeps ticking while
    it runs (with the GIL held it would get at most a tick or two at the edges)."""
    ticks = 0
    inside = threading.Event()
    stop = threading.Event()

    def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            if inside.is_set():
                ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        # Distinct schemas near the limits (no cache in the way), ~0.1-0.6 s each.
        schemas = [json.dumps({"type": "object", "required": ["a", "b"], "properties": {
            k: object_schema(256, prefix=f"{k}{round_}_") for k in "ab"}}) for round_ in range(3)]
        inside.set()
        t0 = time.monotonic()
        for s in schemas:
            _core.json_schema_to_grammar(s)
        elapsed = time.monotonic() - t0
        inside.clear()
    finally:
        stop.set()
        t.join(10)
    # At least one tick per 10 ms of conversion (sleep(0.001) ticks ~every 1-2 ms when free).
    assert elapsed > 0.05
    assert ticks >= max(5, elapsed / 0.01), (ticks, elapsed)


def test_the_in_process_api_refuses_before_queueing(llm):
    t0 = time.monotonic()
    with pytest.raises(lms.LMStudioValueError, match="optional properties"):
        llm.respond("Describe a thing as JSON.", response_format=object_schema(3000),
                    config={"maxTokens": 8})
    assert time.monotonic() - t0 < 5.0
    # The model is fine afterwards, and a schema within the limits constrains as before.
    r = llm.respond("Describe a thing as JSON.", response_format=object_schema(40),
                    config={"temperature": 0, "maxTokens": 24})
    assert r.content.lstrip().startswith("{")


# -- over HTTP ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(smollm2_path, tmp_path_factory):
    pytest.importorskip("httpx")
    pytest.importorskip("starlette")
    from .test_server import ServerProcess

    s = ServerProcess(["--model", str(smollm2_path), "--context-length", "512", "--no-jit"],
                      tmp_path_factory.mktemp("structured-limits") / "server.log")
    s.wait_healthy()
    yield s
    assert s.stop() == 0, s.log()


def test_health_answers_quickly_while_grammar_bombs_are_refused(server):
    import httpx

    results: dict[int, httpx.Response] = {}

    def bombs() -> None:
        with httpx.Client(timeout=120) as c:
            for n in sorted(BOMBS) + [1000, 3000]:
                body = {"model": "smollm2-135m-instruct", "max_tokens": 8,
                        "messages": [{"role": "user", "content": "Describe a thing as JSON."}],
                        "response_format": {"type": "json_schema",
                                            "json_schema": {"name": "thing", "schema": object_schema(n)}}}
                results[n] = c.post(server.url + "/v1/chat/completions", json=body)

    worker = threading.Thread(target=bombs)
    worst = 0.0
    checks = 0
    worker.start()
    with httpx.Client(timeout=30) as c:
        while worker.is_alive() or checks < 5:
            t0 = time.monotonic()
            assert c.get(server.url + "/health").status_code == 200
            worst = max(worst, time.monotonic() - t0)
            checks += 1
            time.sleep(0.02)
            if checks > 5000:
                break
    worker.join(60)
    assert not worker.is_alive()
    assert worst < 1.0, worst
    for n, r in results.items():
        assert r.status_code == 400, (n, r.text)
        err = r.json()["error"]
        assert err["param"] == "response_format" and "too large to turn into a grammar" in err["message"], err
        assert BOMBS[n] in err["message"]
    # The server survives and still answers with a schema within the limits.
    body = {"model": "smollm2-135m-instruct", "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "Describe a thing as JSON."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": object_schema(20)}}}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text


def test_an_oversized_gbnf_grammar_is_refused():
    grammar = "root ::= " + " | ".join(f'"w{i}"' for i in range(120000))
    assert len(grammar) > 1 << 20
    with pytest.raises(lms.LMStudioValueError, match="GBNF grammar is too large"):
        structured.grammar({"type": "gbnf", "gbnfGrammar": grammar})
    assert structured.grammar({"type": "gbnf", "gbnfGrammar": 'root ::= "a"{2000}'}) == 'root ::= "a"{2000}'
