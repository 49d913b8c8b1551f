"""The link wraps (-Wl,--wrap of ggml symbols, csrc/link_wraps.h) cannot fail silently: where the
build says a wrap is linked, llama.cpp's calls reach it after a load and a prompt; where it is not
linked, the report says why. No skip: a llama.cpp bump that renames or stops calling a wrapped
symbol across objects makes this test fail, on every platform."""
import sys

import lmfast as lms

WRAPS = {"lazy_clear": "ggml_backend_buffer_clear", "hugepages": "posix_memalign", "q4_1_gemm": "llamafile_sgemm"}


def test_each_wrap_is_reported_and_called_where_linked(llm):
    # SmolLM2's weights are Q4_1: the prompt's products go through llamafile_sgemm's call site
    # (the wrap passes them on where the CPU lacks AVX2); the load made and cleared the KV cache.
    llm.complete("The capital of France is", config={"temperature": 0, "maxTokens": 2})
    info = lms.backend_info()
    wraps = info["link_wraps"]
    assert {name: w["symbol"] for name, w in wraps.items()} == WRAPS
    for name, w in wraps.items():
        if w["linked"]:
            assert w["calls"] > 0, f"{name} is linked into {w['where']} but llama.cpp never called it: {w}"
        else:
            assert w["calls"] == -1 and w["where"].startswith("not linked ("), w
    if sys.platform.startswith("linux"):
        build = info["build"]
        expected = {"lazy_clear", "q4_1_gemm"} | ({"hugepages"} if not info["hugepages"].startswith(
            "off (not built") else set())
        assert {n for n, w in wraps.items() if w["linked"]} == expected, (wraps, build)
    else:
        assert not any(w["linked"] for w in wraps.values()), wraps

