"""Loaded models belong to the process, not to a Client (issue 32, item 1): every in-process Client,
the default client and a server app built in the same process see the same instances, as every LM
Studio client sees the app's. A client that closes unloads what it loaded (LM Studio's default
when the loading client disconnects); what other clients loaded stays."""
import subprocess
import sys

import pytest

import lmfast as lms
from lmfast.models.registry import fetch_converted

SMALL = {"contextLength": 256, "cpuThreads": 1}
SHORT = {"maxTokens": 4, "temperature": 0}


def ids(namespace) -> list[str]:
    return [m.identifier for m in namespace.list_loaded()]


def run_script(body: str, smollm2_path) -> str:
    """Runs ``body`` in a fresh process (where nothing is loaded yet, so lists are exact)."""
    script = f"import time\nimport lmfast as lms\nPATH = {str(smollm2_path)!r}\nSMALL = {SMALL!r}\n{body}"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_a_model_one_client_loads_is_used_listed_and_unloaded_by_another(smollm2_path):
    out = run_script('''
a, b = lms.Client(), lms.Client()
loaded = a.llm.load_new_instance(PATH, "from-a", config=SMALL)
assert b.llm.model() == loaded                      # .model() with no key: the one loaded anywhere
assert lms.llm() == loaded                          # the default client sees it too
assert [m.identifier for m in b.llm.list_loaded()] == ["from-a"]
assert [m.identifier for m in lms.list_loaded_models()] == ["from-a"]
assert b.llm.get_model_info("from-a") == loaded.get_info()
text = b.llm.model("from-a").respond("Hi", config={"maxTokens": 4, "temperature": 0}).content
assert text == loaded.respond("Hi", config={"maxTokens": 4, "temperature": 0}).content
b.llm.unload("from-a")
assert a.llm.list_loaded() == [] and lms.list_loaded_models() == []
try:
    loaded.respond("Hi")
    raise SystemExit("a handle of an instance another client unloaded still answered")
except lms.ModelUnloadedError:
    pass
try:
    b.llm.model()
    raise SystemExit("model() found an unloaded instance")
except lms.LMStudioClientError as e:
    assert "no models are currently loaded" in str(e)
print("ok")
''', smollm2_path)
    assert out.strip() == "ok"


def test_jit_and_ttl_unloading_act_on_the_shared_instance(smollm2_path):
    """One client JIT-loads a key with a TTL; another uses it, which keeps it loaded past the TTL;
    idle, it unloads for every client."""
    out = run_script('''
a, b = lms.Client(), lms.Client()
jit = a.llm.model("smollm2-135m-instruct", ttl=1.5, config=SMALL)   # not loaded: loads it (JIT)
assert b.llm.model("smollm2-135m-instruct") == jit                  # loaded: the same instance
t0 = time.monotonic()
while time.monotonic() - t0 < 3.5:            # used by b for longer than the TTL: stays
    b.llm.model().respond("Hi", config={"maxTokens": 2})
    time.sleep(0.2)
assert [m.identifier for m in a.llm.list_loaded()] == ["smollm2-135m-instruct"]
deadline = time.monotonic() + 10
while b.llm.list_loaded() and time.monotonic() < deadline:
    time.sleep(0.05)
idle = time.monotonic() - t0 - 3.5
assert b.llm.list_loaded() == [] and a.llm.list_loaded() == [], "the TTL did not unload it"
assert idle >= 1.0, idle                      # unloaded after its TTL of idleness, not before
again = b.llm.model("smollm2-135m-instruct", config=SMALL)         # a JIT load again, now b's
assert again != jit and a.llm.model() == again
print("ok")
''', smollm2_path)
    assert out.strip() == "ok"


def test_duplicate_identifiers_across_clients_raise_the_sdks_load_error(client, smollm2_path):
    other = lms.Client()
    first = other.llm.load_new_instance(str(smollm2_path), "dup-across", config=SMALL)
    try:
        for loader in (client, lms.Client(), lms.get_default_client()):
            with pytest.raises(lms.LMStudioServerError, match="^Model load error: .*'dup-across'"):
                loader.llm.load_new_instance(str(smollm2_path), "dup-across", config=SMALL)
            with pytest.raises(lms.LMStudioServerError, match="Model load error"):  # across kinds too
                loader.embedding.load_new_instance(str(fetch_converted("all-minilm-l6-v2").path), "dup-across")
        assert client.identifier_in_use("dup-across")
        assert ids(client.llm).count("dup-across") == 1 and first.respond("Hi", config=SHORT).content
    finally:
        other.close()
    assert "dup-across" not in ids(client.llm) and not client.identifier_in_use("dup-across")


def test_leaving_a_with_block_unloads_what_it_loaded_and_nothing_else(client, llm, smollm2_path):
    keeper = lms.Client()
    kept = keeper.llm.load_new_instance(str(smollm2_path), "kept", config=SMALL)
    try:
        with lms.Client() as scoped:
            mine = scoped.llm.load_new_instance(str(smollm2_path), "scoped", config=SMALL)
            used_elsewhere = client.llm.model("scoped")  # another client's handle to it
            assert used_elsewhere == mine and scoped.llm.model("kept") == kept
            assert {"scoped", "kept", llm.identifier} <= set(ids(client.llm))
        assert "scoped" not in ids(client.llm) and "scoped" not in ids(keeper.llm)
        with pytest.raises(lms.ModelUnloadedError):
            used_elsewhere.respond("Hi", config=SHORT)
        # What the block used but did not load stays: another client's, and the fixture's.
        assert {"kept", llm.identifier} <= set(ids(client.llm))
        assert kept.respond("Hi", config=SHORT).content and llm.respond("Hi", config=SHORT).content
    finally:
        keeper.close()
    assert "kept" not in ids(client.llm)


def test_an_in_process_server_and_the_clients_see_one_table(client, smollm2_path):
    """A server app built in this process lists what the clients loaded and the clients get what
    the server loaded; each side's unload reaches the other."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from lmfast.server.app import create_app
    from lmfast.server.settings import ServerSettings

    settings = ServerSettings(load_config=SMALL)
    mine = client.llm.load_new_instance(str(smollm2_path), "client-made", config=SMALL)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        listed = {m["id"] for m in http.get("/api/v0/models").json()["data"] if m["state"] == "loaded"}
        assert listed == {m.identifier for m in client.list_loaded_models()} and "client-made" in listed
        r = http.post("/api/v0/models/load", json={"model": "smollm2-135m-instruct", "identifier": "server-made"})
        assert r.status_code == 200, r.text
        made = client.llm.model("server-made")
        assert made.get_info().identifier == "server-made" and made.respond("Hi", config=SHORT).content
        r = http.post("/api/v0/models/load", json={"model": "smollm2-135m-instruct", "identifier": "client-made"})
        assert r.status_code == 409, r.text  # the client's identifier is taken for the server too
        assert http.post("/api/v0/models/unload", json={"identifier": "client-made"}).status_code == 200
        with pytest.raises(lms.ModelUnloadedError):
            mine.respond("Hi", config=SHORT)
        client.llm.unload("server-made")
        listed = {m["id"] for m in http.get("/api/v0/models").json()["data"] if m["state"] == "loaded"}
        assert "server-made" not in listed and "client-made" not in listed


def test_closing_a_client_twice_or_after_another_unloaded_its_model_is_harmless(client, smollm2_path):
    c = lms.Client()
    c.llm.load_new_instance(str(smollm2_path), "closed-twice", config=SMALL)
    client.llm.unload("closed-twice")
    c.close()
    c.close()
    assert "closed-twice" not in ids(client.llm)
    # The closed client's name is free again, for any client.
    again = client.llm.load_new_instance(str(smollm2_path), "closed-twice", config=SMALL)
    again.unload()
    assert "closed-twice" not in ids(client.llm)
