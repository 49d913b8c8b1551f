"""Compute backends: what this build of lmfast has, what it sees on this machine,
and how a load config's ``gpu`` setting becomes llama.cpp's offload parameters."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import _core
from .errors import InvalidConfigError
from .user_warnings import warn_user

_GPU_TYPES = ("gpu", "igpu")

# llama_split_mode
_SPLIT_NONE, _SPLIT_LAYER = 0, 1


def _build_flags() -> dict[str, Any]:
    try:
        from . import _build_info as b
    except ImportError:  # a source tree without a build
        return {}
    names = ("build_type", "ggml_native", "ggml_openmp", "portable", "backend_dl", "cpu_all_variants",
             "cpu_amx", "cuda", "cuda_architectures", "metal", "metal_embed_library", "hugepages")
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(b, name, "")
        if value in ("ON", "TRUE", "1"):
            value = True
        elif value in ("OFF", "FALSE", "0", ""):
            value = False if name not in ("build_type", "cuda_architectures") else value
        out[name] = value
    out["compiled_backends"] = list(getattr(b, "backends", []))
    out["backend_modules"] = list(getattr(b, "backend_modules", []))
    return out


def backend_info() -> dict[str, Any]:
    """What this build of lmfast can run on, and what it sees now.

    Returns a dict with:

    - ``compiled``: the backends this build was compiled with (``"cpu"``, ``"cuda"``, ``"metal"``);
    - ``backends``: the ggml backends registered in this process: ``name``, ``n_devices``,
      ``features`` (e.g. the CPU instruction sets the CPU backend was built for) and ``library``
      (the module file in a portable build: which CPU variant was loaded);
    - ``devices``: every device: ``index``, ``name``, ``description``, ``type``
      (``cpu``/``gpu``/``igpu``/``accel``), ``backend``, ``memory_free`` and ``memory_total`` in bytes;
    - ``gpus``: the GPU devices only (what ``gpu.mainGpu`` and ``gpu.disabledGpus`` count);
    - ``gpu_offload``: whether a load config's ``gpu.ratio`` > 0 can offload here;
    - ``build``: the build's flags (native tuning, portable, CPU variants, CUDA architectures, ...);
    - ``hugepages``: whether large host buffers are advised onto transparent huge pages in this
      process (the KV cache only with ``LMFAST_LAZY_CLEAR=0``: by default its pages are taken as
      conversations fill it): ``"on"``, or ``"off (<why>)"`` (``LMFAST_HUGEPAGES``, a hypervisor
      balloon that reports free pages, or a build without it);
    - ``link_wraps``: where lmfast changes llama.cpp through the link (``-Wl,--wrap``), by name
      (``lazy_clear``, ``hugepages``, ``q4_1_gemm``): ``symbol``, ``file``, ``linked``, ``calls``
      through it so far (-1 where not linked) and ``where`` (the binary, or why not linked).
    """
    now = _core.backends()
    build = _build_flags()
    gpus = [d for d in now["devices"] if d["type"] in _GPU_TYPES]
    return {
        "version": _core.version,
        "compiled": build.get("compiled_backends", ["cpu"]),
        "backends": now["backends"],
        "devices": now["devices"],
        "gpus": gpus,
        "gpu_offload": bool(gpus),
        "build": build,
        "hugepages": _core.hugepages_status(),
        "link_wraps": {w["name"]: w for w in _core.link_wraps()},
    }


@dataclass
class OffloadPlan:
    """llama.cpp model parameters for a ``gpu`` load setting, and the setting as applied."""
    n_gpu_layers: int = 0
    main_gpu: int = 0
    split_mode: int = _SPLIT_LAYER
    devices: list[int] = field(default_factory=list)   # ggml device indices
    applied: dict[str, Any] = field(default_factory=dict)


def plan_offload(gpu: dict[str, Any], n_layer: int, *, stacklevel: int = 2) -> OffloadPlan:
    """Turns a normalised ``gpu`` setting into offload parameters.

    ``ratio`` r offloads round(r * (n_layer + 1)) layers, the +1 being the output layer
    (llama.cpp's n_gpu_layers counts it), at least one layer when r > 0. GPUs are numbered
    0.. in ggml's device order over GPU devices only; ``disabledGpus`` removes some,
    ``mainGpu`` names the GPU for the output layer and scratch buffers, ``splitStrategy``
    ``"evenly"`` spreads layers over the GPUs (by free memory, llama.cpp's layer split) and
    ``"favorMainGpu"`` keeps every offloaded layer on the main GPU.

    Without a usable GPU (CPU-only build, no device, every GPU disabled) a request for
    offload warns and runs on the CPU; the applied setting then says ``ratio: 0.0``.
    """
    ratio = float(gpu.get("ratio", 0.0))
    applied = dict(gpu)
    applied["ratio"] = ratio
    if ratio <= 0.0:
        return OffloadPlan(applied=applied)

    gpus = [d for d in _core.backends()["devices"] if d["type"] in _GPU_TYPES]
    disabled = set(gpu.get("disabledGpus", []))
    if gpus:
        bad = sorted(i for i in disabled if not 0 <= i < len(gpus))
        if bad:
            raise InvalidConfigError(f"config key 'gpu.disabledGpus': no GPU with index {bad[0]} "
                                     f"(this machine has {len(gpus)}: 0..{len(gpus) - 1})")
    usable = [i for i in range(len(gpus)) if i not in disabled]
    if not usable:
        if not gpus:
            compiled = _build_flags().get("compiled_backends", ["cpu"])
            why = ("this build of lmfast has no GPU backend (compiled: " + ", ".join(compiled) + ")"
                   if compiled == ["cpu"] else
                   f"no GPU device was found (compiled backends: {', '.join(compiled)}; is the driver installed?)")
        else:
            why = "every GPU is listed in gpu.disabledGpus"
        warn_user(f"GPU offload was requested (gpu.ratio={ratio:g}), but {why}: running on the CPU",
                  RuntimeWarning)
        applied["ratio"] = 0.0
        return OffloadPlan(applied=applied)

    main = gpu.get("mainGpu", usable[0])
    if main >= len(gpus):
        raise InvalidConfigError(f"config key 'gpu.mainGpu': no GPU with index {main} "
                                 f"(this machine has {len(gpus)}: 0..{len(gpus) - 1})")
    if main in disabled:
        raise InvalidConfigError(f"config key 'gpu.mainGpu': GPU {main} is listed in gpu.disabledGpus")
    strategy = gpu.get("splitStrategy", "evenly")
    n_gpu_layers = max(1, min(n_layer + 1, round(ratio * (n_layer + 1))))
    applied.update(mainGpu=main, splitStrategy=strategy)
    return OffloadPlan(
        n_gpu_layers=n_gpu_layers,
        main_gpu=usable.index(main),
        split_mode=_SPLIT_NONE if strategy == "favorMainGpu" else _SPLIT_LAYER,
        devices=[gpus[i]["index"] for i in usable],
        applied=applied,
    )


# The attention scores of one micro-batch at full context, above which a CPU load keeps flash
# attention on: without it llama.cpp materialises them (f32, n_ctx x n_ubatch x heads). SmolLM2
# (9 heads) at 4096 tokens needs 72 MiB, an 8B model (32 heads) 256 MiB at 4096 and 1 GiB at
# 16384, where flash attention stays on. The buffer is resident only as deep as prompts reach.
_SCORES_CAP = 512 << 20


def default_flash_attention(meta: dict[str, Any], *, n_ctx: int, n_ubatch: int, n_gpu_layers: int,
                            kv_on_gpu: bool, quantized_v: bool) -> bool | None:
    """The ``flashAttention`` an unset key resolves to: False where attention runs on the CPU,
    None (llama.cpp's ``auto``: on where supported) elsewhere.

    ggml's CPU flash-attention kernel loses to the plain matrix products once a context holds
    more than ~250 tokens, and chats pass that within a few turns. AVX2 EPYC, 2 threads
    (benchmarks/RESULTS.md, "Flash attention off by default on a CPU"): a chat's later turns took
    1.57x as long with it at depth 700-1000 (SmolLM2), and a synthetic Llama-3.2-1B decoded 1.5x
    slower at depth 1024. It stays on where it is needed (a quantized V cache), where the scores
    it avoids would be large (``_SCORES_CAP``), and on GPUs, where llama.cpp's kernels win. Off
    costs memory (V is stored transposed) and makes results depend more on batch shape: README,
    "Flash attention on a CPU"."""
    if quantized_v or (n_gpu_layers != 0 and kv_on_gpu):
        return None
    arch = meta.get("general.architecture", "")
    heads = meta.get(f"{arch}.attention.head_count", 0)
    n_head = max(heads) if isinstance(heads, (list, tuple)) else int(heads or 0)
    if n_head <= 0 or n_ctx * n_ubatch * n_head * 4 > _SCORES_CAP:
        return None
    return False
