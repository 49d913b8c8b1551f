"""What a new user trips over in the Python API and over HTTP (issue 37, items 4, 5 and 10):
tools a template cannot describe, a load config that an already loaded instance ignores, and
warnings that must name the user's own line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import warnings

import pytest

import lmfast as lms

from .test_cli_newcomer import env_for, free_port, wait_for

TOOL = {"type": "function", "function": {"name": "multiply", "description": "Multiply two numbers.",
                                         "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}


def multiply(a: float, b: float) -> float:
    """Given two numbers a and b, returns their product."""
    return a * b


def run_script(code: str, tmp_path, smollm2_path) -> subprocess.CompletedProcess:
    """A user's script file, so that a warning's file and line can be checked."""
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, "-W", "always", str(script)], capture_output=True, text=True,
                          timeout=300, env=env_for(tmp_path, models=smollm2_path.parents[2]))


def warning_lines(stderr: str, script: str = "user_script.py") -> list[tuple[str, int, str]]:
    """(file name, line, category) of each warning printed by Python's default formatter."""
    out = []
    for line in stderr.splitlines():
        if "Warning: " in line and ".py:" in line:
            path, lineno, rest = line.split(":", 2)
            out.append((os.path.basename(path), int(lineno), rest.split(":")[0].strip()))
    return out


def test_required_tool_call_on_a_template_without_tools_is_an_error(llm):
    with pytest.raises(lms.LMStudioUnsupportedConfigError, match="does not describe tools"):
        llm.respond("What is 2 times 3?", config={"maxTokens": 4, "rawTools": {
            "type": "toolArray", "tools": [TOOL], "force": True}})
    # offered, not required: the answer comes, with a warning (below: at the user's line)
    with pytest.warns(UserWarning, match="does not describe tools"):
        result = llm.act("What is 2 times 3?", [multiply], config={"maxTokens": 4})
    assert result.rounds == 1


def test_warnings_name_the_users_line(tmp_path, smollm2_path):
    """act(), respond(config=rawTools) and a second lms.llm() with another config, each through
    lmfast's public wrappers: every warning names user_script.py and the line of the call."""
    res = run_script('''
        import lmfast as lms

        def multiply(a: float, b: float) -> float:
            """Multiply."""
            return a * b

        model = lms.llm("smollm2-135m-instruct", config={"contextLength": 512})
        model.act("2 times 3?", [multiply], config={"maxTokens": 2})                        # line 9
        again = lms.llm("smollm2-135m-instruct", config={"contextLength": 1024})            # line 10
        print(again.get_context_length())
        tools = {"type": "toolArray", "tools": [{"type": "function", "function": {"name": "f"}}]}
        model.respond_stream("hi", config={"maxTokens": 2, "rawTools": tools}).wait_for_result()  # line 13
    ''', tmp_path, smollm2_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "512"  # the loaded instance, as LM Studio returns it
    assert warning_lines(res.stderr) == [("user_script.py", 9, "UserWarning"), ("user_script.py", 10, "UserWarning"),
                                         ("user_script.py", 13, "UserWarning")], res.stderr
    assert "contextLength=512 (asked 1024)" in res.stderr


def test_a_config_the_loaded_instance_already_has_does_not_warn(llm):
    applied = llm.get_load_config().context_length
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = lms.get_default_client().llm.model(llm.identifier, config={"contextLength": applied})
    assert same.identifier == llm.identifier


@pytest.fixture(scope="module")
def keyless_server(tmp_path_factory, smollm2_path):
    pytest.importorskip("uvicorn")
    tmp = tmp_path_factory.mktemp("tools-server")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmfast", "serve", "--port", str(port), "--cpu-threads", "1",
                             "--context-length", "512", "--model", "smollm2-135m-instruct"],
                            env=env_for(tmp, models=smollm2_path.parents[2]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def post(url: str, body: dict) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read().decode()
            return r.status, json.loads(raw) if not body.get("stream") else raw
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_tool_choice_required_on_a_template_without_tools_is_400(keyless_server):
    chat = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "2 times 3?"}],
            "max_tokens": 4, "tools": [TOOL]}
    for choice in ("required", {"type": "function", "function": {"name": "multiply"}}):
        for stream in (False, True):
            status, body = post(keyless_server + "/v1/chat/completions", {**chat, "tool_choice": choice,
                                                                          "stream": stream})
            assert status == 400, body
            assert "does not describe tools" in body["error"]["message"]
    status, body = post(keyless_server + "/v1/chat/completions", {**chat, "tool_choice": "auto"})
    assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length"), body


def test_hub_search_fails_fast_when_nothing_listens(monkeypatch):
    """huggingface_hub retries a refused connection for ~23 s; lmfast asks once and says why."""
    pytest.importorskip("huggingface_hub")
    import time

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.monotonic()
    with pytest.raises(lms.LMStudioError, match="cannot reach http://127.0.0.1"):
        lms.Client().repository.search_models("qwen", limit=2)
    with pytest.raises(lms.LMStudioError, match="cannot reach"):
        from lmfast.models import hub

        hub.list_repo("test-org/Any-GGUF")
    assert time.monotonic() - t0 < 5


def test_gpu_fallback_warning_names_the_users_line(tmp_path, smollm2_path):
    """A GPU offload asked for on a machine without one warns once, at the load call."""
    from lmfast.backends import backend_info

    if backend_info()["gpu_offload"]:
        pytest.skip("this machine has a GPU: the offload is honoured and nothing warns")
    res = run_script('''
        import lmfast as lms

        cfg = {"contextLength": 256, "gpu": {"ratio": "max"}}
        with lms.Client() as client:
            model = client.llm.load_new_instance("smollm2-135m-instruct", config=cfg)  # line 6
            print(model.get_load_config()["gpu"]["ratio"])
    ''', tmp_path, smollm2_path)
    assert res.returncode == 0, res.stderr
    assert warning_lines(res.stderr) == [("user_script.py", 6, "RuntimeWarning")], res.stderr
