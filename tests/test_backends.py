"""Backends and GPU offload: backend_info(), the gpu load setting, and the CPU fallback."""
import warnings

import pytest

import lmfast as lms
from lmfast import backends
from lmfast.errors import InvalidConfigError
from lmfast.models.gguf import read_metadata

from .conftest import GREEDY

PROMPT = "What is the capital of France? Answer in one word."
SMALL = {"contextLength": 512, "maxParallelPredictions": 1}  # quick loads
ANSWER = {**GREEDY, "maxTokens": 16}
HAS_GPU = lms.backend_info()["gpu_offload"]
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no GPU device on this machine / in this build")
needs_no_gpu = pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: no CPU fallback to check")


def _n_layer(path) -> int:
    meta = read_metadata(path)
    return int(meta[f"{meta['general.architecture']}.block_count"])


def test_backend_info_sees_the_cpu():
    info = lms.backend_info()
    assert "cpu" in info["compiled"]
    cpus = [d for d in info["devices"] if d["type"] == "cpu"]
    assert len(cpus) == 1
    cpu = cpus[0]
    assert cpu["name"] and cpu["description"]
    assert cpu["memory_total"] > 0 and 0 < cpu["memory_free"] <= cpu["memory_total"]
    assert cpu["backend"] in {b["name"] for b in info["backends"]}
    cpu_reg = next(b for b in info["backends"] if b["name"] == cpu["backend"])
    assert cpu_reg["n_devices"] >= 1
    assert info["gpus"] == [d for d in info["devices"] if d["type"] in ("gpu", "igpu")]
    assert info["gpu_offload"] == bool(info["gpus"])
    build = info["build"]
    for key in ("portable", "backend_dl", "ggml_native", "cuda", "metal", "cpu_amx"):
        assert isinstance(build[key], bool), key
    assert build["cuda"] == ("cuda" in info["compiled"])
    if build["backend_dl"]:
        # A portable build loaded one CPU variant module from the package folder.
        assert cpu_reg["library"].endswith((".so", ".dylib", ".dll"))
        assert "ggml-cpu" in cpu_reg["library"]
        assert build["backend_modules"]


def test_backend_info_cpu_features_match_the_build():
    info = lms.backend_info()
    cpu_reg = next(b for b in info["backends"] if b["name"] == "CPU")
    # The CPU backend reports the instruction sets it was compiled for; the x86 and
    # ARM builds always name at least one.
    import platform
    if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
        assert cpu_reg["features"], cpu_reg


@needs_no_gpu
@pytest.mark.parametrize("ratio", [0.5, "max"])
def test_offload_without_gpu_warns_and_answers_on_cpu(client, llm, smollm2_path, ratio):
    expected = llm.respond(PROMPT, config=ANSWER)
    with pytest.warns(RuntimeWarning, match=r"GPU offload was requested .*running on the CPU"):
        model = client.llm.load_new_instance(str(smollm2_path), config={**SMALL, "gpu": {"ratio": ratio}})
    try:
        result = model.respond(PROMPT, config=ANSWER)
        assert result.content == expected.content
        assert result.stats.num_gpu_layers == 0
        # get_load_config() says what was applied: no offload.
        assert model.get_load_config()["gpu"]["ratio"] == 0.0
    finally:
        model.unload()


@needs_no_gpu
def test_offload_without_gpu_keeps_other_gpu_fields_and_round_trips(client, smollm2_path):
    cfg = {"gpu": {"ratio": 0.25, "mainGpu": 0, "splitStrategy": "favorMainGpu", "disabledGpus": [3]}}
    with pytest.warns(RuntimeWarning, match="GPU offload was requested"):
        model = client.llm.load_new_instance(str(smollm2_path), config={**SMALL, **cfg})
    try:
        applied = model.get_load_config()
        assert applied["gpu"] == {"ratio": 0.0, "mainGpu": 0, "splitStrategy": "favorMainGpu", "disabledGpus": [3]}
        # The applied gpu setting loads again, now without a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = client.llm.load_new_instance(str(smollm2_path), config={**SMALL, "gpu": applied["gpu"]})
        again.unload()
    finally:
        model.unload()


def test_no_offload_asked_no_warning(client, smollm2_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = client.llm.load_new_instance(str(smollm2_path), config={**SMALL, "gpu": {"ratio": "off"}})
    try:
        assert model.get_load_config()["gpu"]["ratio"] == 0.0
        assert model.respond(PROMPT, config=ANSWER).stats.num_gpu_layers == 0
    finally:
        model.unload()


@pytest.mark.parametrize("gpu, match", [
    ({"ratio": 1.5}, "ratio"),
    ({"ratio": "most"}, "ratio"),
    ({"mainGpu": -1}, "mainGpu"),
    ({"splitStrategy": "fast"}, "splitStrategy"),
    ({"disabledGpus": "0"}, "disabledGpus"),
    ({"layers": 3}, "unknown field"),
])
def test_bad_gpu_settings_raise(client, smollm2_path, gpu, match):
    with pytest.raises(InvalidConfigError, match=match):
        client.llm.load_new_instance(str(smollm2_path), config={"gpu": gpu})


# -- the planner, against a machine with three fake GPUs (no model is loaded) ----------------

@pytest.fixture
def three_gpus(monkeypatch):
    devices = [{"index": 0, "type": "cpu"}, {"index": 1, "type": "gpu"}, {"index": 2, "type": "gpu"},
               {"index": 3, "type": "accel"}, {"index": 4, "type": "gpu"}]

    class FakeCore:
        @staticmethod
        def backends():
            return {"backends": [], "devices": devices}

    monkeypatch.setattr(backends, "_core", FakeCore)


@pytest.mark.parametrize("ratio, n_layer, layers", [
    (1.0, 30, 31), (0.5, 30, 16), (0.01, 30, 1), (0.5, 29, 15), (1.0, 1, 2),
])
def test_plan_counts_layers_with_the_output_layer(three_gpus, ratio, n_layer, layers):
    plan = backends.plan_offload({"ratio": ratio}, n_layer)
    assert plan.n_gpu_layers == layers
    assert plan.devices == [1, 2, 4]  # ggml indices of the GPUs, CPU and accelerators left out
    assert plan.main_gpu == 0 and plan.split_mode == 1
    assert plan.applied == {"ratio": ratio, "mainGpu": 0, "splitStrategy": "evenly"}


def test_plan_main_gpu_and_disabled_gpus(three_gpus):
    plan = backends.plan_offload({"ratio": 1.0, "mainGpu": 2, "disabledGpus": [0],
                                  "splitStrategy": "favorMainGpu"}, 10)
    assert plan.devices == [2, 4]     # GPU 0 (ggml device 1) disabled
    assert plan.main_gpu == 1         # GPU 2 is the second of the devices handed to llama.cpp
    assert plan.split_mode == 0       # favorMainGpu: every offloaded layer on the main GPU
    with pytest.raises(InvalidConfigError, match="mainGpu.*3"):
        backends.plan_offload({"ratio": 1.0, "mainGpu": 3}, 10)
    with pytest.raises(InvalidConfigError, match="disabledGpus"):
        backends.plan_offload({"ratio": 1.0, "mainGpu": 0, "disabledGpus": [0]}, 10)
    with pytest.raises(InvalidConfigError, match="disabledGpus.*7"):
        backends.plan_offload({"ratio": 1.0, "disabledGpus": [7]}, 10)
    with pytest.warns(RuntimeWarning, match="every GPU is listed in gpu.disabledGpus"):
        plan = backends.plan_offload({"ratio": 1.0, "disabledGpus": [0, 1, 2]}, 10)
    assert plan.n_gpu_layers == 0 and plan.applied["ratio"] == 0.0


# -- on a machine with a GPU ----------------------------------------------------------------

def _gpu_free() -> int:
    return sum(d["memory_free"] for d in lms.backend_info()["gpus"])


@needs_gpu
def test_full_offload_on_gpu(client, smollm2_path):
    n_layer = _n_layer(smollm2_path)
    free_before = _gpu_free()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = client.llm.load_new_instance(str(smollm2_path), config={**SMALL, "gpu": {"ratio": "max"}})
    try:
        # The weights went to the GPU: its free memory fell by at least most of the file.
        assert free_before - _gpu_free() > 0.8 * smollm2_path.stat().st_size
        first = model.respond(PROMPT, config=ANSWER)
        assert first.stats.num_gpu_layers == n_layer + 1
        assert first.stats.predicted_tokens_count == 16 and first.content.strip()
        assert model.respond(PROMPT, config=ANSWER).content == first.content
        assert model.get_load_config()["gpu"]["ratio"] == 1.0
    finally:
        model.unload()


@needs_gpu
def test_partial_offload_on_gpu(client, smollm2_path):
    n_layer = _n_layer(smollm2_path)
    model = client.llm.load_new_instance(str(smollm2_path), config={**SMALL, "gpu": {"ratio": 0.5}})
    try:
        result = model.respond(PROMPT, config=ANSWER)
        assert result.stats.num_gpu_layers == round(0.5 * (n_layer + 1))
        assert result.stats.predicted_tokens_count == 16 and result.content.strip()
        assert model.get_load_config()["gpu"]["ratio"] == 0.5
    finally:
        model.unload()
