"""A synthetic audio projector for the audio tests: random weights in the layout of Ultravox's
(projector type ``ultravox``: a Whisper-style encoder -- two 1-D convolutions over the log-mel
spectrogram, a learned position embedding, pre-norm transformer blocks -- then frames stacked
``STACK`` at a time, an RMS norm, a SwiGLU layer, a second RMS norm and an output projection),
small enough to write and load in well under a second, with an output width that matches the text
model (SmolLM2-135M: 576). Also writes tiny WAV clips with the standard library's ``wave``.

Ultravox is the audio type libmtmd wraps in no marker tokens, so it pairs with SmolLM2's
vocabulary (the Qwen2-Audio and Voxtral types need ``<|audio_bos|>`` / ``[BEGIN_AUDIO]``, which
SmolLM2 lacks).

libmtmd turns every clip into 30-second chunks of 3,000 mel frames (a shorter clip is padded with
silence), the convolutions halve that to 1,500 positions, and stacking ``STACK`` of them leaves
``audio_tokens()`` embeddings per chunk. The weights are random: the tests compare lmfast with
llama.cpp's own ``llama-mtmd-cli`` on the same files, never with expected words."""
from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from .vision_model import encoder_blocks, write_gguf

N_MEL = 16  # libmtmd accepts 1..256 (Whisper uses 80 or 128); fewer makes a smaller first convolution
N_EMBD = 64
N_HEAD = 4
N_FF = 128  # differs from N_EMBD: clip.cpp swaps ffn up/down of old files when ffn_down's rows equal n_embd
N_LAYER = 1
N_POS = 1500  # positions after the stride-2 convolution of a 3,000-frame chunk
STACK = 16  # frames stacked per output embedding: 1,500 / 16 -> 94 audio tokens per chunk
MLP_HIDDEN = 128  # the SwiGLU layer's output width (its input projection is twice that)
SAMPLE_RATE = 16000  # what libmtmd resamples every clip to for Whisper-style encoders


def audio_tokens() -> int:
    """Embeddings one 30-second chunk takes (clip.cpp: align 3,000 to STACK, divide, halve)."""
    return (-(-3000 // STACK) * STACK // STACK) // 2


def _tensors(text_n_embd: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Name -> array (numpy shape is ggml's ne reversed)."""
    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    t = {
        # ggml_conv_1d kernels (kernel 3) and biases shaped to broadcast over the frames.
        "a.conv1d.1.weight": w(N_EMBD, N_MEL, 3), "a.conv1d.1.bias": w(N_EMBD, 1),
        "a.conv1d.2.weight": w(N_EMBD, N_EMBD, 3), "a.conv1d.2.bias": w(N_EMBD, 1),
        "a.position_embd.weight": w(N_POS, N_EMBD),
        "a.post_ln.weight": np.ones(N_EMBD, np.float32), "a.post_ln.bias": np.zeros(N_EMBD, np.float32),
        "mm.a.norm_pre.weight": np.ones(N_EMBD * STACK, np.float32),
        "mm.a.mlp.1.weight": w(2 * MLP_HIDDEN, N_EMBD * STACK),
        "mm.a.norm_mid.weight": np.ones(MLP_HIDDEN, np.float32),
        "mm.a.mlp.2.weight": w(text_n_embd, MLP_HIDDEN),
    }
    t.update(encoder_blocks("a", N_LAYER, N_EMBD, N_FF, w, key_bias=False))  # Whisper's key has no bias
    return t


def write_audio_projector(path: str | Path, text_n_embd: int = 576, seed: int = 0) -> Path:
    """Writes an ``ultravox`` audio projector whose output width is ``text_n_embd``."""
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("general.name", "lmfast synthetic ultravox projector")
    writer.add_string("clip.projector_type", "ultravox")
    writer.add_bool("clip.has_audio_encoder", True)
    writer.add_uint32("clip.audio.embedding_length", N_EMBD)
    writer.add_uint32("clip.audio.attention.head_count", N_HEAD)
    writer.add_uint32("clip.audio.feed_forward_length", N_FF)
    writer.add_uint32("clip.audio.block_count", N_LAYER)
    writer.add_uint32("clip.audio.projection_dim", text_n_embd)
    writer.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.audio.num_mel_bins", N_MEL)
    writer.add_uint32("clip.audio.projector.stack_factor", STACK)
    return write_gguf(writer, _tensors(text_n_embd, np.random.default_rng(seed)), path)


def wav_bytes(seconds: float = 1.0, freq: float = 440.0, rate: int = SAMPLE_RATE, channels: int = 1,
              seed: int = 0) -> bytes:
    """A 16-bit PCM WAV: a sine at ``freq`` Hz plus a little noise (``seed``)."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    signal = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).standard_normal(n)
    pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2")
    frames = np.repeat(pcm[:, None], channels, axis=1).tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buf.getvalue()
