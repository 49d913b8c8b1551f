"""Audio clips in chats (lmfast.prepare_audio, csrc/vision.*): SmolLM2 with a synthetic ultravox
projector (tests/audio_model.py), compared with llama.cpp's own llama-mtmd-cli on the same files."""
import shutil
import struct

import pytest

import lmfast as lms
from lmfast.chat import Chat

from .audio_model import wav_bytes, write_audio_projector
from .oracle import run_mtmd_cli
from .vision_model import png_bytes, write_projector

N_PREDICT = 16
# Two clips: a 1 s 16 kHz mono one (what the encoder takes as is) and a 2.5 s 22,050 Hz stereo
# one (libmtmd's miniaudio mixes it down and resamples it).
CLIPS = {"tone.wav": wav_bytes(1.0, 440.0, seed=1), "stereo.wav": wav_bytes(2.5, 220.0, rate=22050, channels=2, seed=2)}
PROMPT = "What do you hear in this clip?"


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory, smollm2_path):
    """SmolLM2 beside an ultravox mmproj*.gguf (a hard link: the model is not copied)."""
    d = tmp_path_factory.mktemp("audio")
    try:
        (d / smollm2_path.name).hardlink_to(smollm2_path)
    except OSError:
        shutil.copy(smollm2_path, d / smollm2_path.name)
    write_audio_projector(d / "mmproj-audio.gguf")
    for name, data in CLIPS.items():
        (d / name).write_bytes(data)
    return d


@pytest.fixture(scope="module")
def alm(client, audio_dir):
    model = client.llm.load_new_instance(str(audio_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"), "audio-test",
                                         config={"cpuThreads": 1, "contextLength": 1024})
    yield model
    model.unload()


def _greedy():
    return {"temperature": 0.0, "maxTokens": N_PREDICT, "repeatPenalty": 1.0}


def _mtmd_cli(alm, d, clip, prompt):
    """llama-mtmd-cli's answer about ``clip`` with SmolLM2 and the audio projector in ``d``."""
    return run_mtmd_cli(alm, d / "SmolLM2-135M-Instruct.Q4_1.gguf", d / "mmproj-audio.gguf", "--audio", clip, prompt,
                        n_predict=N_PREDICT)


def test_audio_projector_is_found_and_reported(alm, audio_dir):
    info = alm.get_info()
    assert info.audio is True and info.vision is False
    assert '"audio": true' in str(info)
    assert alm.get_load_config()["mmproj"] == str(audio_dir / "mmproj-audio.gguf")
    handle = lms.prepare_audio(audio_dir / "tone.wav")
    assert handle.file_type == "audio" and handle.name == "tone.wav" and handle.size_bytes == len(CLIPS["tone.wav"])


@pytest.mark.parametrize("clip, prompt", [("tone.wav", PROMPT), ("tone.wav", "Is anyone speaking? Answer briefly."),
                                          ("stereo.wav", PROMPT)])
def test_greedy_answer_about_a_clip_equals_llama_mtmd_cli(alm, audio_dir, clip, prompt):
    chat = Chat()
    chat.add_user_message(prompt, audio=[lms.prepare_audio(audio_dir / clip)])
    stream = alm.respond_stream(chat, config=_greedy())
    result = stream.wait_for_result()
    model, engine = alm._instance.native()
    text = b"".join(model.token_to_piece(t) for t in stream.token_ids)
    assert len(stream.token_ids) > 0
    expected = _mtmd_cli(alm, audio_dir, audio_dir / clip, prompt)
    # llama-mtmd-cli prints a newline after the prompt, then each token's text, then newlines.
    assert expected.startswith(b"\n" + text) and expected[len(text) + 1:].strip(b"\n") == b"", \
        f"lmfast: {text!r}\nllama-mtmd-cli: {expected!r}"
    assert result.stats.image_tokens_count > 0
    assert engine.counters()["images_encoded"] >= 1


def test_second_turn_about_the_same_clip_encodes_nothing(alm, audio_dir):
    chat = Chat()
    chat.add_user_message("What is the pitch?", audio=[lms.prepare_audio(CLIPS["stereo.wav"], name="s.wav")])
    _, engine = alm._instance.native()
    first = alm.respond(chat, config=_greedy())
    before = engine.counters()["images_encoded"]
    chat.add_assistant_response(first)
    chat.add_user_message("And how loud is it?")
    second = alm.respond(chat, config=_greedy())
    assert engine.counters()["images_encoded"] == before
    assert first.stats.image_tokens_count == second.stats.image_tokens_count > 0
    reused = second.stats.cached_prompt_tokens_count + second.stats.restored_prompt_tokens_count
    assert reused >= second.stats.image_tokens_count


def _truncated_header() -> bytes:
    return CLIPS["tone.wav"][:30]  # RIFF/WAVE, then the fmt chunk cut off


def _claims_more_than_it_holds() -> bytes:
    """A WAV whose data chunk claims 2 GiB over 64 bytes of samples (a decompression bomb's shape)."""
    clip = bytearray(wav_bytes(0.002))
    at = clip.index(b"data") + 4
    clip[at:at + 4] = struct.pack("<I", 0x7FFFFFF0)
    return bytes(clip)


@pytest.mark.parametrize("data, match", [
    (b"RIFF\x00\x00\x00\x00WAVEjunk-not-audio", r"audio clip 1 could not be decoded"),
    (_truncated_header(), r"audio clip 1 could not be decoded"),
    (b"just some text, not a clip at all", r"audio clip 1 is not a WAV, MP3 or FLAC"),
    (png_bytes(16, 16), r"reads audio, not images"),
])
def test_bad_audio_is_a_clear_error_and_the_model_answers_after(alm, data, match):
    chat = Chat()
    kind = "image" if data.startswith(b"\x89PNG") else "audio"
    handle = (lms.prepare_image if kind == "image" else lms.prepare_audio)(data)
    chat.add_user_message("Listen.", **{"images" if kind == "image" else "audio": [handle]})
    with pytest.raises(lms.LMStudioValueError, match=match):
        alm.respond(chat, config=_greedy())
    assert alm.respond("Say hi.", config={"maxTokens": 2}).stats.predicted_tokens_count > 0


def test_an_empty_clip_is_refused_when_prepared():
    with pytest.raises(lms.LMStudioValueError, match="empty"):
        lms.prepare_audio(b"")


def test_a_clip_claiming_more_samples_than_it_holds_is_bounded(alm):
    """The header's claim is not what gets allocated: the clip decodes to what its bytes hold, or
    is refused, in either case without taking the process's memory."""
    chat = Chat()
    chat.add_user_message("Listen.", audio=[lms.prepare_audio(_claims_more_than_it_holds())])
    try:
        result = alm.respond(chat, config=_greedy())
        assert result.stats.image_tokens_count > 0
    except lms.LMStudioValueError as e:
        assert "audio clip 1" in str(e)
    assert alm.respond("Say hi.", config={"maxTokens": 2}).stats.predicted_tokens_count > 0


def test_audio_sent_to_a_model_without_an_audio_projector_names_the_model(client, llm, audio_dir, tmp_path):
    chat = Chat()
    chat.add_user_message("Listen.", audio=[lms.prepare_audio(CLIPS["tone.wav"], name="tone.wav")])
    with pytest.raises(lms.LMStudioValueError, match=rf"{llm.identifier!r}.*'tone\.wav'"):
        llm.respond(chat, config=_greedy())
    # A model with an image projector only: it reads no audio.
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").hardlink_to(audio_dir / "SmolLM2-135M-Instruct.Q4_1.gguf")
    write_projector(tmp_path / "mmproj-image.gguf")
    vlm = client.llm.load_new_instance(str(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"), "audio-test-vision-only",
                                       config={"cpuThreads": 1, "contextLength": 512})
    try:
        assert vlm.get_info().audio is None and vlm.get_info().vision is True
        with pytest.raises(lms.LMStudioValueError, match=r"'audio-test-vision-only' reads no audio.*'tone\.wav'"):
            vlm.respond(chat, config=_greedy())
    finally:
        vlm.unload()


# -- the server: OpenAI's input_audio parts in /v1/chat/completions -------------------------------

@pytest.fixture(scope="module")
def server(audio_dir, tmp_path_factory):
    from .test_server import ServerProcess

    s = ServerProcess(["--model", str(audio_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"), "--context-length", "1024"],
                      tmp_path_factory.mktemp("audio-server") / "server.log")
    try:
        s.wait_healthy()
        yield s
    finally:
        s.stop()


def _audio_part(data: bytes, fmt: str = "wav") -> dict:
    import base64

    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def test_input_audio_through_the_openai_client_gives_the_in_process_answer(server, alm):
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    model_id = api.models.list().data[0].id
    prompt = "Describe the sound."
    got = api.chat.completions.create(model=model_id, temperature=0, max_tokens=N_PREDICT, messages=[
        {"role": "user", "content": [{"type": "text", "text": prompt}, _audio_part(CLIPS["tone.wav"])]}])
    chat = Chat()
    chat.add_user_message(prompt, audio=[lms.prepare_audio(CLIPS["tone.wav"])])
    expected = alm.respond(chat, config={"temperature": 0.0, "maxTokens": N_PREDICT}).content
    assert expected and got.choices[0].message.content == expected
    # Bad parts are 400s in OpenAI's error shape naming the part, and the server answers after.
    for part, match in [(_audio_part(CLIPS["tone.wav"], "ogg"), "input_audio.format"),
                        (_audio_part(b"not a clip"), "not a WAV, MP3 or FLAC"),
                        ({"type": "input_audio", "input_audio": {"format": "wav"}}, "input_audio.data")]:
        with pytest.raises(openai.BadRequestError, match=match):
            api.chat.completions.create(model=model_id, max_tokens=2, messages=[
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, part]}])
    again = api.chat.completions.create(model=model_id, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert again.choices[0].message.content is not None and server.proc.poll() is None


def test_remote_client_sends_audio_as_input_audio_parts(server, alm):
    """lms.Client(host).prepare_audio keeps the clip in this process; respond() sends it as an
    input_audio part and gets the in-process answer. Each side answers twice and the second
    answers are compared: both then find the prompt cached (DESIGN.md: cold and cached runs may
    round apart)."""
    prompt, cfg = "What do you hear?", {"temperature": 0.0, "maxTokens": N_PREDICT}
    here = Chat()
    here.add_user_message(prompt, audio=[lms.prepare_audio(CLIPS["tone.wav"])])
    expected = [alm.respond(here, config=cfg).content for _ in range(2)][-1]
    with lms.Client(f"127.0.0.1:{server.port}") as remote:
        handle = remote.files.prepare_audio(CLIPS["tone.wav"], name="tone.wav")
        assert handle.file_type == "audio" and remote.prepare_audio(CLIPS["tone.wav"]).identifier == handle.identifier
        there = Chat()
        there.add_user_message(prompt, audio=[handle])
        model = remote.llm.model()
        got = [model.respond(there, config=cfg).content for _ in range(2)][-1]
    assert expected and got == expected


def test_every_client_prepares_audio_handles():
    import asyncio

    data = CLIPS["tone.wav"]
    want = lms.prepare_audio(data)
    with lms.Client() as c:
        handles = [c.prepare_audio(data), c.files.prepare_audio(data, name="tone.wav")]

    async def in_async():
        client = lms.AsyncClient()
        try:
            return [await client.prepare_audio(data), await client.files.prepare_audio(data)]
        finally:
            await client.aclose()

    handles += asyncio.run(in_async())
    assert all(h.file_type == "audio" and h.identifier == want.identifier and h.size_bytes == len(data)
               for h in handles), handles
    assert handles[1].name == "tone.wav"
