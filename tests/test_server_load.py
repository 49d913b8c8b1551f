"""`lmfast serve` under load, at shutdown, with slow clients, and as a background server
(`lmfast server start|stop|status`, the README's commands). Loopback only, bounded in count
and time."""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .test_server import SMOL, ServerProcess, chat, free_port, metric, wait_until

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

README = Path(__file__).resolve().parents[1] / "README.md"


async def _stream_once(client, url: str, body: dict, disconnect_after: int | None) -> dict:
    """One streamed chat: ('ok', text) / ('error', code) / ('disconnected', n) / ('http', status)."""
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return {"kind": "http", "status": r.status_code, "body": r.text}
        parts, n, saw_done, error = [], 0, False, None
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            payload = line[6:]
            if payload == "[DONE]":
                saw_done = True
                break
            obj = json.loads(payload)
            if "error" in obj:
                error = obj["error"]
                continue
            n += 1
            if obj["choices"]:
                parts.append(obj["choices"][0]["delta"].get("content") or "")
            if disconnect_after is not None and n >= disconnect_after:
                return {"kind": "disconnected", "n": n}
        if error is not None:
            return {"kind": "error", "code": error["code"], "done": saw_done}
        return {"kind": "ok", "text": "".join(parts), "done": saw_done}


@pytest.mark.slow
def test_many_streaming_clients_with_disconnects_and_a_reload(smollm2_path, tmp_path):
    """64 clients x 5 streamed requests, a fifth of them hanging up mid-stream, the model
    unloaded and JIT-loaded back (by its key) in the middle: no 500, every finished stream is an
    answer or a clear error event, the busy sequences return to 0 and RSS stays bounded."""
    n_clients, per_client = 64, 5
    # The host tier is a cache that fills up to its budget (by default an eighth of free memory:
    # 3 GiB here, +349 MiB over this load) and is bounded here so that RSS shows leaks, not it.
    server = ServerProcess(["--model", str(smollm2_path), "--context-length", "512", "--parallel", "4",
                            "--max-queue", "64", "--prompt-cache-ram-mb", "16"], tmp_path / "server.log")
    try:
        server.wait_healthy()
        rng = random.Random(7)
        results: list[dict] = []

        async def client_task(i: int, client, rounds: int) -> None:
            for k in range(rounds):
                body = {"model": SMOL, "stream": True, "temperature": 0, "max_tokens": 12,
                        "messages": chat(f"Client {i}, request {k}: name an animal.")}
                hang_up = rng.random() < 0.2
                results.append(await _stream_once(client, server.url, body, 3 if hang_up else None))

        async def reloader() -> None:
            await asyncio.sleep(1.5)
            async with httpx.AsyncClient(timeout=60) as c:
                r = await c.post(server.url + "/api/v0/models/unload", json={"all": True})
                assert r.status_code == 200, r.text

        async def main(rounds: int) -> float:
            t0 = time.monotonic()
            limits = httpx.Limits(max_connections=n_clients + 4)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                await asyncio.gather(reloader(), *(client_task(i, client, rounds) for i in range(n_clients)))
            return time.monotonic() - t0

        # A first round of the same load brings the process to its steady state (the allocator's
        # per-thread arenas, a reloaded model's pages; measured: +95 MiB anonymous memory in the
        # first round, then +2 and +4 MiB in the next ones): RSS is compared after it.
        asyncio.run(main(per_client))
        warm = {"model": SMOL, "messages": chat("warm up"), "max_tokens": 8, "temperature": 0}
        assert httpx.post(server.url + "/v1/chat/completions", json=warm, timeout=60).status_code == 200  # loaded again
        assert wait_until(lambda: metric(server.url, "lmfast_busy_sequences") == 0, timeout=10)
        rss_before = server.rss_bytes()
        results.clear()
        elapsed = asyncio.run(main(per_client))
        kinds = {}
        for r in results:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        assert len(results) == n_clients * per_client
        assert not [r for r in results if r["kind"] == "http" and r["status"] >= 500 and r["status"] != 503], results
        for r in results:
            if r["kind"] == "ok":
                assert r["done"] and r["text"].strip(), r
            elif r["kind"] == "error":
                assert r["code"] in ("model_unloaded",) and r["done"], r
            elif r["kind"] == "http":
                assert r["status"] == 503, r
        # Only the requests in flight at the unload (at most one per client) end with its error.
        assert kinds.get("error", 0) <= n_clients and kinds.get("ok", 0) >= n_clients, kinds
        assert kinds.get("disconnected", 0) > 0, kinds
        # The model was unloaded and came back by JIT (a TTL now: JIT loads have one).
        loaded = [m for m in httpx.get(server.url + "/api/v0/models").json()["data"] if m["state"] == "loaded"]
        assert [m["id"] for m in loaded] == [SMOL] and loaded[0]["ttl"] == 3600, loaded
        assert wait_until(lambda: metric(server.url, "lmfast_busy_sequences") == 0, timeout=10)
        assert metric(server.url, "lmfast_queue_depth") == 0
        assert metric(server.url, "lmfast_requests_total") > 0
        text = httpx.get(server.url + "/metrics").text
        assert not re.search(r'status="5\d\d"', text.replace('status="503"', "")), text
        rss_growth = server.rss_bytes() - rss_before
        assert rss_growth < 64 * 2**20, f"RSS grew {rss_growth / 2**20:.1f} MiB"
        print(f"\n{n_clients}x{per_client} streams in {elapsed:.1f} s: {kinds}, RSS {rss_growth / 2**20:+.1f} MiB")
    finally:
        assert server.stop() == 0, server.log()


def test_slow_clients_do_not_hold_up_the_others(smollm2_path, tmp_path):
    server = ServerProcess(["--model", str(smollm2_path), "--context-length", "512"], tmp_path / "server.log")
    try:
        server.wait_healthy()
        idle = socket.create_connection(("127.0.0.1", server.port))  # connects, sends nothing
        idle.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{")
        slow_body = {"model": SMOL, "stream": True, "temperature": 0, "max_tokens": 200,
                     "messages": chat("Write a long story about a dragon.")}
        slow_lines: list[str] = []
        streaming = threading.Event()

        def slow_reader() -> None:
            with httpx.stream("POST", server.url + "/v1/chat/completions", json=slow_body, timeout=120) as r:
                for line in r.iter_lines():
                    slow_lines.append(line)
                    streaming.set()
                    time.sleep(0.2)  # a slow consumer: reads a line every 0.2 s
                    if len(slow_lines) > 12:
                        return

        t = threading.Thread(target=slow_reader)
        t.start()
        assert streaming.wait(60), "the slow client's stream never started"
        oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
        t0 = time.monotonic()
        for i in range(3):
            r = oai.chat.completions.create(model=SMOL, messages=chat(f"Say {i}."), temperature=0, max_tokens=8)
            assert r.choices[0].message.content
        fast = time.monotonic() - t0
        t.join(60)
        idle.close()
        assert fast < 20, f"3 short requests took {fast:.1f} s beside the slow clients"
        assert len(slow_lines) > 5
    finally:
        assert server.stop() == 0, server.log()


def test_sigterm_during_streams_exits_zero(smollm2_path, tmp_path):
    server = ServerProcess(["--model", str(smollm2_path), "--context-length", "512", "--grace", "3"],
                           tmp_path / "server.log")
    server.wait_healthy()
    outcomes: list[dict] = []
    started = threading.Barrier(9)

    def one(i: int) -> None:
        body = {"model": SMOL, "stream": True, "temperature": 0, "ignore_eos": True, "max_tokens": 400,
                "messages": chat(f"Count from one to five hundred in words ({i}).")}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
            it = r.iter_lines()
            first = next(it)
            started.wait(30)
            lines = [first, *it]
        outcomes.append({"done": "data: [DONE]" in lines,
                         "error": any('"error"' in line for line in lines)})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    started.wait(60)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health").status_code != 503:  # the signal has reached the server
        assert time.monotonic() < deadline, "the server never started draining"
        time.sleep(0.02)
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": SMOL, "messages": chat("hi")}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
    assert httpx.get(server.url + "/health").status_code == 503
    rc = server.proc.wait(30)
    took = time.monotonic() - t0
    for t in threads:
        t.join(10)
    server.stop()
    assert rc == 0, server.log()
    assert took < 3 + 8, took
    assert len(outcomes) == 8 and all(o["done"] for o in outcomes), outcomes
    assert any(o["error"] for o in outcomes), "no stream outlived the grace period: the test checks nothing"


def test_server_refuses_an_open_bind_without_a_key():
    r = subprocess.run([sys.executable, "-m", "lmfast.server", "serve", "--host", "0.0.0.0", "--port",
                        str(free_port())], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "LMFAST_API_KEY"})
    assert r.returncode == 1 and "--api-key" in r.stderr  # a refusal, not a malformed command line


def _readme_commands() -> list[str]:
    """The bash block of the README's HTTP server section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## HTTP server"):]
    block = section[section.index("```bash") + 7:]
    return [line for line in block[:block.index("```")].strip().splitlines() if line and not line.startswith("#")]


def test_readme_section_runs(smollm2_path, tmp_path):
    """The README's commands: server start, a curl call, an openai call, server status and stop."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    port = free_port()
    env = {**os.environ, "LMFAST_CACHE_DIR": str(tmp_path / "cache"), "LMFAST_MODELS_DIR":
           str(smollm2_path.parents[2])}  # the server state in a fresh folder, the models where they are
    python = shlex.quote(sys.executable)
    wired = subprocess.run([sys.executable, "-m", "lmfast", "serve", "--help"], capture_output=True).returncode == 0
    for command in _readme_commands():
        command = command.replace("1234", str(port))
        if not wired:  # lmfast's command line without the serve verbs: the server package's own entry
            command = command.replace("python -m lmfast ", "python -m lmfast.server ")
        command = re.sub(r"^python ", python + " ", command)
        if "server start" in command:
            command += " --cpu-threads 1 --context-length 512"
        r = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=180, env=env)
        assert r.returncode == 0, (command, r.stdout, r.stderr)
        if "curl" in command:
            assert json.loads(r.stdout)["choices"][0]["message"]["content"]
        if "OpenAI(" in command:
            assert r.stdout.strip()
    assert not (tmp_path / "cache" / "server.json").exists()


def test_a_full_queue_is_503_with_retry_after(smollm2_path, tmp_path):
    """One sequence and no queue: while one stream runs, the next request gets 503 at once, and
    the openai client raises its class for it."""
    server = ServerProcess(["--model", str(smollm2_path), "--context-length", "512", "--parallel", "1",
                            "--max-queue", "0"], tmp_path / "server.log")
    try:
        server.wait_healthy()
        body = {"model": SMOL, "stream": True, "temperature": 0, "ignore_eos": True, "max_tokens": 300,
                "messages": chat("Count from one to three hundred in words.")}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            next(lines)
            busy = httpx.post(server.url + "/v1/chat/completions", timeout=10,
                              json={"model": SMOL, "messages": chat("hi"), "max_tokens": 4})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "queue_full"
            oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
            with pytest.raises(openai.InternalServerError) as e:
                oai.chat.completions.create(model=SMOL, messages=chat("hi"), max_tokens=4)
            assert e.value.status_code == 503
        assert wait_until(lambda: metric(server.url, "lmfast_busy_sequences") == 0, timeout=5)
        ok = httpx.post(server.url + "/v1/chat/completions", json={"model": SMOL, "messages": chat("hi"),
                                                                  "max_tokens": 4}, timeout=60)
        assert ok.status_code == 200
    finally:
        assert server.stop() == 0, server.log()


def test_serve_without_the_server_extra_says_how_to_install_it():
    # A well-formed command that cannot run: exit 1 under the CLI's convention (README, "Exit codes").
    code = ("import sys; sys.modules['uvicorn'] = None; sys.modules['starlette'] = None\n"
            "from lmfast.server.__main__ import main\n"
            "raise SystemExit(main(['serve', '--port', '1']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "pip install 'lmfast[server]'" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-c", "import sys; sys.modules['starlette'] = None; import lmfast; "
                        "print(lmfast.__version__)"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr  # the library itself needs none of it
