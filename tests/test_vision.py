"""Images in chats (lmfast.images, csrc/vision.*): SmolLM2 with a synthetic mlp projector and
Gemma 3 270M with a synthetic gemma3 one (tests/vision_model.py), compared with llama.cpp's own
llama-mtmd-cli on the same files."""
import shutil

import pytest

import lmfast as lms
from lmfast import _core
from lmfast.chat import Chat

from .oracle import run_mtmd_cli
from .vision_model import bmp_bytes, png_bytes, png_claiming, write_projector

N_PREDICT = 24
PROMPT = "Describe this image."
# The oracle matrix: 3 images of different sizes and formats x 2 prompts, per projector type.
ORACLE_IMAGES = {"wide.png": png_bytes(48, 24, seed=1), "tall.png": png_bytes(72, 120, seed=2),
                 "odd.bmp": bmp_bytes(37, 29, seed=3)}
ORACLE_PROMPTS = (PROMPT, "Is there any text in it? Answer briefly.")


def _beside(d, model_path, kind, text_n_embd):
    """The model beside an mmproj*.gguf in ``d`` (a hard link, so the model is not copied), as LM
    Studio lays vision models out."""
    model = d / model_path.name
    try:
        model.hardlink_to(model_path)
    except OSError:
        shutil.copy(model_path, model)
    write_projector(d / "mmproj-synthetic.gguf", text_n_embd=text_n_embd, kind=kind)
    for name, data in ORACLE_IMAGES.items():
        (d / name).write_bytes(data)
    return d


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory, smollm2_path):
    return _beside(tmp_path_factory.mktemp("vision"), smollm2_path, "mlp", 576)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    """Gemma 3 270M (its vocabulary has Gemma 3's image markers) beside a gemma3 projector."""
    from benchmarks.models import gemma_q4_k_m_path

    return _beside(tmp_path_factory.mktemp("vision-gemma3"), gemma_q4_k_m_path(quiet=True), "gemma3", 640)


def _load(client, d, identifier):
    model = next(p for p in d.glob("*.gguf") if not p.name.startswith("mmproj"))
    return client.llm.load_new_instance(str(model), identifier, config={"cpuThreads": 1, "contextLength": 1024})


@pytest.fixture(scope="module")
def vlm(client, vision_dir):
    model = _load(client, vision_dir, "vision-test")
    yield model
    model.unload()


@pytest.fixture(scope="module")
def vlm_gemma(client, gemma_dir):
    model = _load(client, gemma_dir, "vision-test-gemma3")
    yield model
    model.unload()


def _kind(request, kind):
    """(loaded model, its directory) of a projector type: one load per type for the module."""
    if kind == "gemma3":
        return request.getfixturevalue("vlm_gemma"), request.getfixturevalue("gemma_dir")
    return request.getfixturevalue("vlm"), request.getfixturevalue("vision_dir")


# Gemma 3 270M has no chat template: lmfast renders its chats with llama.cpp's ChatML fallback
# (common_chat_templates_init's), and llama-mtmd-cli refuses a model without a template unless
# one is named, so it is given that same fallback by name.
CLI_TEMPLATE = {"mlp": (), "gemma3": ("--chat-template", "chatml")}


def _greedy():
    return {"temperature": 0.0, "maxTokens": N_PREDICT, "repeatPenalty": 1.0}


def _mtmd_cli(vlm, d, image, prompt, template=()):
    """llama-mtmd-cli's answer about ``image`` with the model and projector in ``d``; ``template``:
    CLI_TEMPLATE's flags for the model."""
    model = next(p for p in d.glob("*.gguf") if not p.name.startswith("mmproj"))
    return run_mtmd_cli(vlm, model, d / "mmproj-synthetic.gguf", "--image", image, prompt, *template,
                        n_predict=N_PREDICT)


def test_projector_beside_the_model_is_found_and_reported(vlm, vision_dir):
    assert vlm.get_info().vision is True
    assert vlm.get_load_config()["mmproj"] == str(vision_dir / "mmproj-synthetic.gguf")


@pytest.mark.parametrize("prompt", ORACLE_PROMPTS, ids=["describe", "text"])
@pytest.mark.parametrize("image", list(ORACLE_IMAGES))
@pytest.mark.parametrize("kind", ["mlp", "gemma3"])
def test_greedy_answer_about_an_image_equals_llama_mtmd_cli(request, kind, image, prompt):
    """Gemma 3 evaluates an image's embeddings with non-causal attention (libmtmd's
    mtmd_decode_use_non_causal); lmfast evaluates image chunks through the same libmtmd helper as
    llama-mtmd-cli (mtmd_helper_eval_chunk_single), which switches it on for the image alone."""
    vlm, d = _kind(request, kind)
    chat = Chat()
    chat.add_user_message(prompt, images=[lms.prepare_image(d / image)])
    stream = vlm.respond_stream(chat, config=_greedy())
    result = stream.wait_for_result()
    model, engine = vlm._instance.native()
    text = b"".join(model.token_to_piece(t) for t in stream.token_ids)
    assert len(stream.token_ids) > 0
    expected = _mtmd_cli(vlm, d, d / image, prompt, CLI_TEMPLATE[kind])
    # llama-mtmd-cli prints a newline after the prompt, then each token's text, then newlines.
    assert expected.startswith(b"\n" + text) and expected[len(text) + 1:].strip(b"\n") == b"", \
        f"lmfast: {text!r}\nllama-mtmd-cli: {expected!r}"
    assert result.stats.prompt_tokens_count > 0
    assert engine.counters()["images_encoded"] >= 1


@pytest.mark.parametrize("kind", ["mlp", "gemma3"])
def test_second_turn_about_the_same_image_encodes_no_image(request, kind):
    vlm, d = _kind(request, kind)
    handle = lms.prepare_image((d / "wide.png").read_bytes(), name="wide.png")
    chat = Chat()
    chat.add_user_message("What colour is it?", images=[handle])
    _, engine = vlm._instance.native()
    first = vlm.respond(chat, config=_greedy())
    before = engine.counters()["images_encoded"]
    chat.add_assistant_response(first)
    chat.add_user_message("And its shape?")
    second = vlm.respond(chat, config=_greedy())
    assert engine.counters()["images_encoded"] == before
    n_image = vlm._render_with_tools(chat, None).n_image_tokens
    assert first.stats.image_tokens_count == second.stats.image_tokens_count == n_image > 0
    reused = second.stats.cached_prompt_tokens_count + second.stats.restored_prompt_tokens_count
    assert reused >= n_image
    assert vlm.respond("Say hi.", config={"maxTokens": 2}).stats.image_tokens_count == 0


def test_a_different_image_gives_a_different_prompt(vlm, vision_dir):
    model, _ = vlm._instance.native()
    vision = vlm._instance.vision
    text = _core.Vision.marker + "x"
    a = vision.prompt(text, [png_bytes(32, 32, seed=1)])
    b = vision.prompt(text, [png_bytes(32, 32, seed=2)])
    again = vision.prompt(text, [png_bytes(32, 32, seed=1)])
    assert a.n_image_tokens == b.n_image_tokens > 0
    assert a.n_chunks >= 2
    # The same pixels give the same placeholders (the prefix cache finds them), others do not.
    assert again.tokens == a.tokens
    assert a.tokens != b.tokens and a.tokens[-1] == b.tokens[-1]
    # A BMP (bottom-up rows, BGR, padded) decodes to the pixels of the PNG written from the same array.
    assert vision.prompt(text, [bmp_bytes(37, 29, seed=3)]).tokens == \
        vision.prompt(text, [png_bytes(37, 29, seed=3)]).tokens


def test_libmtmd_logs_follow_lmfast_log_level(vlm, vision_dir, capfd):
    """libmtmd logs through llama.cpp's callback, so LMFAST_LOG / set_log_level filter it: a
    projector load and an image prompt print nothing at "error", libmtmd's lines at "info"."""
    import os

    model, _ = vlm._instance.native()
    path = str(vision_dir / "mmproj-synthetic.gguf")
    try:
        lms.set_log_level("error")
        capfd.readouterr()
        _core.Vision(model, path, n_threads=1).prompt(_core.Vision.marker + "x", [png_bytes(32, 32)])
        quiet = capfd.readouterr().err
        lms.set_log_level("info")
        _core.Vision(model, path, n_threads=1)
        loud = capfd.readouterr().err
    finally:
        lms.set_log_level(os.environ.get("LMFAST_LOG", "error"))
    assert "clip_model_loader" not in quiet and "add_text" not in quiet, quiet[-2000:]
    assert "clip_model_loader" in loud


def test_cancel_while_images_are_evaluated_stops_the_request(vlm_gemma):
    """A chat with 30 images (each a 16-embedding non-causal decode through Gemma 3's 18 layers:
    ~0.3 s here, tens of ms on a fast CPU) cancelled 0.2 s in: it ends as userStopped (not an
    error) without evaluating every image (the engine checks between chunks), and the model
    answers the next request."""
    import time

    _, engine = vlm_gemma._instance.native()
    chat = Chat()
    chat.add_user_message("Compare them.", images=[lms.prepare_image(png_bytes(32, 32, seed=300 + i))
                                                   for i in range(30)])
    before = engine.counters()["images_encoded"]
    stream = vlm_gemma.respond_stream(chat, config=_greedy())
    stream.start()  # a stream is submitted when first read or started
    time.sleep(0.2)
    stream.cancel()
    result = stream.wait_for_result()
    assert result.stats.stop_reason == "userStopped"
    assert engine.counters()["images_encoded"] - before < 30
    assert vlm_gemma.respond("Hello", config={"maxTokens": 2}).stats.predicted_tokens_count > 0


def test_non_causal_image_larger_than_the_micro_batch_is_refused(client, gemma_dir, tmp_path):
    """Gemma 3's image embeddings are evaluated non-causally, in one micro-batch: an image of more
    tokens than the model's micro-batch holds (evalBatchSize) is a clear error at submit (a larger
    one made llama.cpp assert, a smaller split evaluated another image than llama-mtmd-cli's), and
    the model still answers."""
    model = next(p for p in gemma_dir.glob("*.gguf") if not p.name.startswith("mmproj"))
    small = client.llm.load_new_instance(str(model), "vision-small-batch", config={
        "cpuThreads": 1, "contextLength": 256, "evalBatchSize": 8})
    try:
        chat = Chat()
        chat.add_user_message(PROMPT, images=[lms.prepare_image(gemma_dir / "wide.png")])
        with pytest.raises(lms.LMStudioValueError, match="takes 16 tokens.*evalBatchSize 16 or more"):
            small.respond(chat, config=_greedy())
        assert small.respond("Hello", config={"maxTokens": 2}).stats.predicted_tokens_count > 0
    finally:
        small.unload()
    # 1,024 tokens an image, past the 512-token micro-batch lmfast caps evalBatchSize's at.
    big = client.llm.load_new_instance(str(model), "vision-big-image", config={
        "cpuThreads": 1, "contextLength": 2048, "evalBatchSize": 2048,
        "mmproj": str(write_projector(tmp_path / "mmproj-big.gguf", 640, kind="gemma3", gemma3_tokens=1024))})
    try:
        with pytest.raises(lms.LMStudioValueError, match="takes 1024 tokens.*cannot take images this large"):
            big.respond(chat, config=_greedy())
        assert big.respond("Hello", config={"maxTokens": 2}).stats.predicted_tokens_count > 0
    finally:
        big.unload()


def test_image_to_a_model_without_projector_names_the_model(llm, vision_dir):
    chat = Chat()
    chat.add_user_message(PROMPT, images=[lms.prepare_image(vision_dir / "wide.png")])
    with pytest.raises(lms.LMStudioValueError, match=f"{llm.identifier!r} has no vision support"):
        llm.respond(chat, config={"maxTokens": 1})


@pytest.mark.parametrize("data,error", [(b"", "empty"), (b"not an image at all", "could not be decoded"),
                                        (png_bytes(32, 32)[:40], "could not be decoded"),
                                        (png_claiming(12000, 12000), "megapixels"),
                                        (png_claiming(30000, 30000), "could not be decoded")],
                         ids=["empty", "not-an-image", "truncated-png", "decompression-bomb", "over-decoder-limit"])
def test_bad_image_is_a_clear_error_and_the_model_still_answers(vlm, data, error):
    chat = Chat()
    if data:
        chat.add_user_message(PROMPT, images=[lms.prepare_image(data, name="bad.png")])
        with pytest.raises(lms.LMStudioValueError, match=error):
            vlm.respond(chat, config=_greedy())
    else:
        with pytest.raises(lms.LMStudioValueError, match=error):
            lms.prepare_image(data)
    assert vlm.respond("Say hi.", config={"maxTokens": 4}).content


def test_corrupt_or_mismatched_projector_is_a_clear_load_error(client, vision_dir, tmp_path):
    model = next(vision_dir.glob("SmolLM2*.gguf"))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes((vision_dir / "mmproj-synthetic.gguf").read_bytes()[:300])
    with pytest.raises(lms.LMStudioError, match="truncated.gguf"):
        client.llm.load_new_instance(str(model), "vision-bad-1", config={"mmproj": str(truncated)})
    wrong = write_projector(tmp_path / "wide-proj.gguf", text_n_embd=640)
    with pytest.raises(lms.LMStudioError, match="embedding width"):
        client.llm.load_new_instance(str(model), "vision-bad-2", config={"mmproj": str(wrong)})
    # idefics3 wraps images in tokens SmolLM2's vocabulary lacks: refused at load, not an abort.
    other = write_projector(tmp_path / "idefics3.gguf", kind="idefics3")
    with pytest.raises(lms.LMStudioError, match="not in the model's vocabulary"):
        client.llm.load_new_instance(str(model), "vision-bad-3", config={"mmproj": str(other)})


def test_an_unusable_projector_found_beside_the_model_is_a_warning_not_a_failed_load(client, smollm2_path,
                                                                                   tmp_path):
    """Named, a bad projector fails the load (above); found by the search, it must not cost the
    user the text model (a Hub repository may hold a projector lmfast refuses, e.g. audio)."""
    model = tmp_path / smollm2_path.name
    try:
        model.hardlink_to(smollm2_path)
    except OSError:
        shutil.copy(smollm2_path, model)
    (tmp_path / "mmproj-audio.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.warns(UserWarning, match="mmproj-audio.gguf beside the model was not loaded"):
        llm = client.llm.load_new_instance(str(model), "vision-found-bad", config={"contextLength": 256})
    try:
        assert llm.get_info().vision is False
        assert llm.complete("Hello", config={"temperature": 0, "maxTokens": 2}).stats.predicted_tokens_count > 0
    finally:
        llm.unload()


def test_projector_whose_key_has_the_wrong_type_is_refused_before_libmtmd(tmp_path):
    import gguf

    path = tmp_path / "mmproj-badtype.gguf"
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "idefics3")
    w.add_float32("clip.vision.image_size", 32.0)  # clip.cpp asserts: it reads a uint32
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(lms.ModelLoadError, match="clip.vision.image_size"):
        _core.validate_projector(str(path))


def test_mmproj_false_turns_vision_off(client, vision_dir):
    model = client.llm.load_new_instance(str(next(vision_dir.glob("SmolLM2*.gguf"))), "vision-off",
                                         config={"mmproj": False, "contextLength": 256})
    try:
        assert model.get_info().vision is False
    finally:
        model.unload()


def test_image_requests_batched_with_text_requests_equal_their_run_alone_outputs(client, vision_dir):
    """Four chats with images and four text chats at once: each answer equals its own run alone.
    The concurrent run goes first, with images no earlier test sent, so that it encodes every
    image at admission while the other requests decode in the batch.

    SmolLM2 with flash attention, as tests/test_engine.py's batched-against-alone test: its Q4_1
    products (csrc/q4_1_gemm.cpp) give the same bits in any batch, and with flash attention so
    does attention over a KV cache other sequences share (without it, greedy answers can part at a
    near tie, as test_engine.py notes; this test failed once in three full-module runs). Gemma 3 270M Q4_K_M is not batch-invariant: 8 text-only chats at once
    against alone differed in 3 of 8 answers (flash attention on or off), so the comparison would
    test ggml's kernels, not images."""
    from concurrent.futures import ThreadPoolExecutor

    model = next(vision_dir.glob("SmolLM2*.gguf"))
    vlm = client.llm.load_new_instance(str(model), "vision-batched", config={
        "cpuThreads": 1, "contextLength": 1024, "flashAttention": True})
    request_images = [png_bytes(48, 24, seed=11), png_bytes(72, 120, seed=12), bmp_bytes(37, 29, seed=13),
                      png_bytes(40, 32, seed=14)]
    chats = []
    for i, image in enumerate(request_images):
        chat = Chat()
        chat.add_user_message(ORACLE_PROMPTS[i % 2], images=[lms.prepare_image(image)])
        chats.append(chat)
    chats += [f"Name {n} colours." for n in ("two", "three", "four", "five")]
    try:
        _, engine = vlm._instance.native()
        before = engine.counters()["images_encoded"]
        with ThreadPoolExecutor(len(chats)) as pool:
            together = list(pool.map(lambda c: vlm.respond(c, config=_greedy()).content, chats))
        assert engine.counters()["images_encoded"] >= before + len(request_images)
        alone = [vlm.respond(c, config=_greedy()).content for c in chats]
    finally:
        vlm.unload()
    assert together == alone
    assert len(set(alone)) > 1  # the answers differ: a mix-up between requests would show


def test_server_image_url_data_part_gives_the_in_process_answer(vlm, vision_dir):
    """/v1/chat/completions with an image_url part (a data: URL) answers as respond() does in
    process; a remote URL is a 400 (the server fetches nothing), and a part that is not an image
    a 400 in OpenAI's error shape."""
    import base64

    from starlette.testclient import TestClient

    from lmfast.server.app import create_app
    from lmfast.server.models import ModelManager
    from lmfast.server.settings import ServerSettings

    data = (vision_dir / "wide.png").read_bytes()
    chat = Chat()
    chat.add_user_message(PROMPT, images=[lms.prepare_image(data)])
    expected = vlm.respond(chat, config=_greedy()).content

    def body(url):
        return {"model": vlm.identifier, "temperature": 0, "max_tokens": N_PREDICT, "repeat_penalty": 1.0,
                "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT},
                                                          {"type": "image_url", "image_url": {"url": url}}]}]}

    settings = ServerSettings()
    manager = ModelManager(settings)
    try:
        with TestClient(create_app(settings, manager), base_url="http://127.0.0.1") as client:
            url = "data:image/png;base64," + base64.b64encode(data).decode()
            r = client.post("/v1/chat/completions", json=body(url))
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == expected
            r = client.post("/v1/chat/completions", json=body("http://127.0.0.1:1/cat.png"))
            assert r.status_code == 400 and "data: URLs" in r.json()["error"]["message"]
            bad = "data:image/png;base64," + base64.b64encode(b"not an image").decode()
            r = client.post("/v1/chat/completions", json=body(bad))
            assert r.status_code == 400 and "could not be decoded" in r.json()["error"]["message"]
            system = body(url)
            system["messages"].insert(0, {"role": "system", "content": [{"type": "image_url", "image_url": url}]})
            r = client.post("/v1/chat/completions", json=system)
            assert r.status_code == 400 and "only user messages" in r.json()["error"]["message"]
    finally:
        manager.close()


def test_two_chats_about_different_images_interleaved_keep_their_caches(vlm):
    """Chat A about one image, chat B about another, then each asks again: neither image is
    encoded again, and each second turn takes the whole first turn, images included, from the
    cache tiers (a KV sequence or the host tier, which carries image positions like text)."""
    _, engine = vlm._instance.native()
    chats = []
    for seed in (5, 6):
        chat = Chat()
        chat.add_user_message("What is this?", images=[lms.prepare_image(png_bytes(32, 40, seed=seed))])
        chat.add_assistant_response(vlm.respond(chat, config=_greedy()))
        chats.append(chat)
    before = engine.counters()["images_encoded"]
    for chat in chats:
        first_turn = vlm._render_with_tools(chat, None)
        chat.add_user_message("Again?")
        result = vlm.respond(chat, config=_greedy())
        # From a KV sequence or, once the other chat took it, from the host tier (spilled KV).
        reused = result.stats.cached_prompt_tokens_count + result.stats.restored_prompt_tokens_count
        assert reused >= first_turn.n_image_tokens
        assert result.stats.evaluated_prompt_tokens_count < first_turn.n_tokens - first_turn.n_image_tokens
    assert engine.counters()["images_encoded"] == before


def test_async_client_prepares_images_and_answers_as_the_sync_one(vlm):
    import asyncio

    from lmfast.async_api import AsyncLLM

    data = png_bytes(40, 40, seed=11)
    cfg = {"temperature": 0.0, "maxTokens": 8}

    async def ask():
        client = lms.AsyncClient()
        try:
            a, b = await client.prepare_image(data), await client.files.prepare_image(data, name="same.png")
            assert a.identifier == b.identifier and b.name == "same.png" and a.size_bytes == len(data)
            chat = Chat()
            chat.add_user_message("What is in the picture?", images=[a])
            return (await AsyncLLM(vlm).respond(chat, config=cfg)).content
        finally:
            await client.aclose()

    chat = Chat()
    chat.add_user_message("What is in the picture?", images=[lms.prepare_image(data)])
    vlm.respond(chat, config=cfg)  # both compared runs then find the prompt cached (DESIGN.md: cold and
    expected = vlm.respond(chat, config=cfg).content  # cached evaluations may round apart)
    assert asyncio.run(ask()) == expected


def test_missing_file_and_more_images_than_the_context_holds_are_clear_errors(vlm, tmp_path):
    with pytest.raises(lms.LMStudioValueError, match="no such file"):
        lms.prepare_image(tmp_path / "absent.png")
    handle = lms.prepare_image(png_bytes(32, 32, seed=5))
    chat = Chat()
    chat.add_user_message(PROMPT, images=[handle] * 80)  # 80 x 16 image tokens > the 1,024-token window
    with pytest.raises(lms.LMStudioValueError, match="does not fit the context length of 1024"):
        vlm.respond(chat, config=_greedy())
    assert vlm.respond("Say hi.", config={"maxTokens": 4}).content


def test_disk_tier_restores_an_image_chat_only_under_its_projector(client, vision_dir, tmp_path):
    """An image's cached positions hold its projector's embeddings under placeholders derived from
    the pixels alone: the disk tier's files are keyed by the projector too (prompt_cache.py)."""
    model = next(p for p in vision_dir.glob("*.gguf") if not p.name.startswith("mmproj"))
    other = write_projector(tmp_path / "mmproj-other.gguf", text_n_embd=576, seed=7)

    def load(name, projector):
        return client.llm.load_new_instance(str(model), name, config={
            "cpuThreads": 1, "contextLength": 1024, "promptCacheDir": str(tmp_path / "kv"), "mmproj": str(projector)})

    chat = Chat()
    chat.add_user_message("What colour is it?", images=[lms.prepare_image((vision_dir / "wide.png").read_bytes())])
    first = load("disk-vision-1", vision_dir / "mmproj-synthetic.gguf")
    try:
        turn1 = first._render_with_tools(chat, None).tokens
        chat.add_assistant_response(first.respond(chat, config=_greedy()))
        assert first._instance.persist(turn1) >= len(turn1)  # the sequence starting with turn 1's prompt
    finally:
        first.unload()
    chat.add_user_message("And its shape?")
    for name, projector, restored in (("disk-vision-2", vision_dir / "mmproj-synthetic.gguf", True),
                                      ("disk-vision-3", other, False)):
        again = load(name, projector)
        try:
            stats = again.respond(chat, config=_greedy()).stats
            encoded = again._instance.native()[1].counters()["images_encoded"]
        finally:
            again.unload()
        if restored:
            assert encoded == 0 and stats.restored_prompt_tokens_count >= stats.image_tokens_count > 0, stats
        else:
            assert encoded == 1 and stats.restored_prompt_tokens_count == 0, stats
