"""Images on every API of the server (/v1/responses, Anthropic's /v1/messages, Ollama's
/api/chat and /api/generate, LM Studio's /api/v0 chat route) and through the remote client: one
`lmfast serve` process holds SmolLM2 with the synthetic `mlp` projector beside it (tests/vision_model.py)
and plain SmolLM2 (no projector); each greedy answer about an image is compared with the same
model's answer in this process (respond() with the same image), never with literal words."""
from __future__ import annotations

import base64
import shutil

import pytest

import lmfast as lms
from lmfast.chat import Chat

from .test_server import ServerProcess
from .vision_model import png_bytes, write_projector

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

CTX = 1024
N_PREDICT = 24
PROMPT = "Describe this image."
IMAGE = png_bytes(48, 24, seed=1)
B64 = base64.b64encode(IMAGE).decode()
URL = "data:image/png;base64," + B64
GREEDY = {"temperature": 0.0, "maxTokens": N_PREDICT}


@pytest.fixture(scope="module")
def vision_model(tmp_path_factory, smollm2_path):
    """SmolLM2 (hard-linked, not copied) beside a synthetic mmproj*.gguf, under its own name so
    that the server's two models get different keys."""
    d = tmp_path_factory.mktemp("vision-api")
    model = d / "vision-smollm2.gguf"
    try:
        model.hardlink_to(smollm2_path)
    except OSError:
        shutil.copy(smollm2_path, model)
    write_projector(d / "mmproj-synthetic.gguf")
    return model


@pytest.fixture(scope="module")
def server(vision_model, smollm2_path, tmp_path_factory):
    s = ServerProcess(["--model", str(vision_model), "--model", str(smollm2_path), "--context-length", str(CTX)],
                      tmp_path_factory.mktemp("vision-api-server") / "server.log")
    try:
        s.wait_healthy()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def ids(server, vision_model):
    """(identifier of the vision model, identifier of the model without a projector) on the server."""
    records = httpx.get(server.url + "/api/v0/models", timeout=10).json()["data"]
    loaded = [r for r in records if r.get("state") == "loaded"]
    vision = [r["id"] for r in loaded if r["path"].endswith(vision_model.name)]
    plain = [r["id"] for r in loaded if not r["path"].endswith(vision_model.name)]
    assert len(vision) == 1 and len(plain) == 1, loaded
    return vision[0], plain[0]


@pytest.fixture(scope="module")
def local(vision_model):
    """The server's vision model with the server's load config, in this process: the reference."""
    with lms.Client() as c:
        yield c.llm.load_new_instance(str(vision_model), "vision-api-local",
                                      config={"contextLength": CTX, "cpuThreads": 1})


@pytest.fixture(scope="module")
def expected(local):
    chat = Chat()
    chat.add_user_message(PROMPT, images=[lms.prepare_image(IMAGE)])
    text = local.respond(chat, config=GREEDY).content
    assert text
    return text


def _post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=120)


# -- each API's image shape gives the in-process answer ----------------------------------------

def test_responses_input_image_through_the_openai_client(server, ids, local, expected):
    """input_image parts (OpenAI's Responses shape), also streamed, then a second turn by
    previous_response_id: the stored conversation keeps the image, and every answer equals the
    in-process chat's. It runs first in the module, so that both sides' caches see the same requests."""
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    turn = [{"role": "user", "content": [{"type": "input_text", "text": PROMPT},
                                         {"type": "input_image", "image_url": URL, "detail": "auto"}]}]
    first = api.responses.create(model=ids[0], temperature=0, max_output_tokens=N_PREDICT, input=turn)
    assert first.output_text == expected
    events = api.responses.create(model=ids[0], temperature=0, max_output_tokens=N_PREDICT, input=turn, stream=True)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == expected
    second = api.responses.create(model=ids[0], temperature=0, max_output_tokens=N_PREDICT,
                                  previous_response_id=first.id, input="And its colours?")
    chat = Chat()
    chat.add_user_message(PROMPT, images=[lms.prepare_image(IMAGE)])
    # The same requests in the same order as the server got (greedy text can depend on which
    # prefix the cache holds: DESIGN.md), then the second turn.
    assert local.respond(chat, config=GREEDY).content == expected
    chat.add_assistant_response(expected)
    chat.add_user_message("And its colours?")
    assert second.output_text == local.respond(chat, config=GREEDY).content


def test_anthropic_image_block_through_the_anthropic_client(server, ids, local, expected):
    """An image block with a base64 source answers as in process, and count_tokens counts the
    image's placeholder tokens as the in-process model does."""
    anthropic = pytest.importorskip("anthropic")
    api = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    turn = [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}},
        {"type": "text", "text": PROMPT}]}]
    # temperature through extra_body: this client version's create() no longer takes it
    msg = api.messages.create(model=ids[0], max_tokens=N_PREDICT, extra_body={"temperature": 0}, messages=turn)
    assert msg.content[0].text == expected
    chat = Chat()
    chat.add_user_message(PROMPT, images=[lms.prepare_image(IMAGE)])
    counted = api.messages.count_tokens(model=ids[0], messages=turn).input_tokens
    assert counted == local.count_prompt_tokens(chat) > local.count_prompt_tokens(PROMPT)
    remote = {"type": "image", "source": {"type": "url", "url": "http://127.0.0.1:1/a.png"}}
    with pytest.raises(anthropic.BadRequestError, match="does not fetch"):
        api.messages.create(model=ids[0], max_tokens=4, messages=[
            {"role": "user", "content": [remote, {"type": "text", "text": PROMPT}]}])


def test_ollama_images_on_chat_and_generate_through_the_ollama_client(server, ids, expected):
    """Ollama's images: on a chat message they belong to it; on generate, to the prompt."""
    ollama = pytest.importorskip("ollama")
    api = ollama.Client(host=server.url)
    options = {"temperature": 0, "num_predict": N_PREDICT}
    r = api.chat(model=ids[0], messages=[{"role": "user", "content": PROMPT, "images": [IMAGE]}], options=options)
    assert r.message.content == expected
    streamed = "".join(part.response for part in api.generate(model=ids[0], prompt=PROMPT, images=[IMAGE],
                                                              options=options, stream=True))
    assert streamed == expected
    assert "vision" in api.show(ids[0]).capabilities and "vision" not in api.show(ids[1]).capabilities
    for path, body, words in [
            ("/api/chat", {"model": ids[0], "messages": [{"role": "user", "content": "Hi"},
                                                         {"role": "assistant", "content": "Hello", "images": [B64]},
                                                         {"role": "user", "content": PROMPT}]}, "only user messages"),
            ("/api/generate", {"model": ids[0], "prompt": PROMPT, "raw": True, "images": [B64]}, "raw")]:
        r = _post(server, path, body)
        assert r.status_code == 400 and words in r.json()["error"], r.text


def test_lmstudio_chat_route_takes_openai_image_parts(server, ids, expected):
    r = _post(server, "/api/v0/chat/completions", {
        "model": ids[0], "temperature": 0, "max_tokens": N_PREDICT,
        "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT},
                                                  {"type": "image_url", "image_url": {"url": URL}}]}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == expected


def test_remote_client_sends_prepared_images(server, ids, expected):
    """client.prepare_image / client.files.prepare_image keep the bytes in the client's process;
    respond() sends them with their message and answers as the in-process model does."""
    with lms.Client(f"127.0.0.1:{server.port}") as remote:
        model = remote.llm.model(ids[0])
        assert model.get_info().vision is True and remote.llm.model(ids[1]).get_info().vision is False
        for handle in (remote.prepare_image(IMAGE, name="a.png"), remote.files.prepare_image(IMAGE)):
            assert handle.file_type == "image" and handle.size_bytes == len(IMAGE)
            chat = Chat()
            chat.add_user_message(PROMPT, images=[handle])
            assert model.respond(chat, config=GREEDY).content == expected
        chat = Chat()
        chat.add_user_message(PROMPT, images=[remote.prepare_image(b"not an image")])
        with pytest.raises(lms.LMStudioValueError, match="could not be decoded"):
            model.respond(chat, config=GREEDY)
        chat = Chat()
        chat.add_user_message(PROMPT, images=[remote.prepare_image(IMAGE)])
        with pytest.raises(lms.LMStudioValueError, match=f"{ids[1]!r} has no vision support"):
            remote.llm.model(ids[1]).respond(chat, config=GREEDY)
        assert model.respond("Say hi.", config={"maxTokens": 4}).content


# -- bad input: a 400 in each API's error shape, and the server still answers --------------------

def _openai_chat(model, b64=None, url=None):
    return "/v1/chat/completions", {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "text", "text": PROMPT},
        {"type": "image_url", "image_url": {"url": url or "data:image/png;base64," + b64}}]}]}


def _lmstudio_chat(model, b64=None, url=None):
    return "/api/v0" + _openai_chat(model, b64, url)[0][3:], _openai_chat(model, b64, url)[1]


def _responses(model, b64=None, url=None):
    return "/v1/responses", {"model": model, "max_output_tokens": 4, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": PROMPT},
        {"type": "input_image", "image_url": url or "data:image/png;base64," + b64}]}]}


def _anthropic(model, b64=None, url=None):
    source = {"type": "url", "url": url} if url else {"type": "base64", "media_type": "image/png", "data": b64}
    return "/v1/messages", {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image", "source": source}, {"type": "text", "text": PROMPT}]}]}


def _ollama_chat(model, b64=None, url=None):  # streamed, as Ollama's clients ask by default
    return "/api/chat", {"model": model, "options": {"num_predict": 4},
                         "messages": [{"role": "user", "content": PROMPT, "images": [url or b64]}]}


def _ollama_generate(model, b64=None, url=None):
    return "/api/generate", {"model": model, "prompt": PROMPT, "images": [url or b64], "options": {"num_predict": 4}}


ROUTES = {"openai-chat": _openai_chat, "lmstudio-chat": _lmstudio_chat, "responses": _responses,
          "anthropic": _anthropic, "ollama-chat": _ollama_chat, "ollama-generate": _ollama_generate}
BAD = {"not-an-image": (base64.b64encode(b"not an image at all").decode(), "could not be decoded"),
       "empty": ("", "empty"),
       "truncated-png": (base64.b64encode(IMAGE[:40]).decode(), "could not be decoded"),
       "remote-url": (None, "does not fetch")}


def _error_message(path: str, body: dict) -> str:
    """The message of an error body, asserting the shape of the API its path belongs to."""
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        return body["error"]["message"]
    if path.startswith("/api/") and not path.startswith("/api/v0/"):
        assert isinstance(body["error"], str), body
        return body["error"]
    assert body["error"]["type"] == "invalid_request_error", body
    return body["error"]["message"]


@pytest.mark.parametrize("route", ROUTES)
def test_bad_images_are_a_400_in_each_apis_shape_and_the_server_still_answers(server, ids, route):
    for kind, (b64, words) in BAD.items():
        path, body = ROUTES[route](ids[0], b64=b64, url="https://127.0.0.1:1/cat.png" if b64 is None else None)
        r = _post(server, path, body)
        assert r.status_code == 400, (kind, r.text)
        assert words in _error_message(path, r.json()), (kind, r.text)
    path, body = ROUTES[route](ids[1], b64=B64)
    r = _post(server, path, body)
    assert r.status_code == 400, r.text
    assert f"{ids[1]!r} has no vision support" in _error_message(path, r.json())
    r = _post(server, "/v1/chat/completions", {"model": ids[0], "max_tokens": 2,
                                                "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
    assert server.proc.poll() is None
