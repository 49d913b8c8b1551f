"""Rerank throughput: 100 query-document pairs (4,950 tokens) scored by lmfast's RerankContext (1 thread, pairs packed as the reranker packs them: RERANK_PACK_TOKENS)
and by llama-embedding --pooling rank (1 thread, -fa off) at its default batching (-c 512: one 2048-token
batch) and at lmfast's (-b 512 -ub 512), on a MiniLM-L6-shaped random cross-encoder; llama-embedding's time
is its wall clock minus a one-pair run (load and start), alternated, medians of 3. Scores are equal
(tests/test_rerank.py holds them to 1e-4); this compares time only.

    python -m benchmarks.rerank_llama_embedding [MODEL.gguf]

Without a model it writes the MiniLM-L6-shaped random cross-encoder (tests/cross_encoder.py) to a
temporary folder. Measured 2026-12-05 on the 2-core test machine (load 1.7-3): lmfast 9.41 s
(10.6 docs/s), llama-embedding at its defaults 23.67 s (4.2 docs/s, 2.5x slower: one 2048-token
batch, whose masked attention grows with its square), llama-embedding -b 512 10.91 s (9.2 docs/s).
(llama-embedding's own "prompt eval time" line under-reports a run of several batches: wall clock.)
Those figures were taken when lmfast packed pairs into 512-token batches; it now packs 128 (config.py)."""
import statistics, subprocess, sys, time
import lmfast as lms
from lmfast import _core, _reference
from lmfast.config import EMBEDDING_LOAD_KEYS, RERANK_BATCH_TOKENS, RERANK_PACK_TOKENS, with_defaults
from lmfast.embedding import embedding_params

if len(sys.argv) > 1:
    path = sys.argv[1]
else:
    import tempfile
    from pathlib import Path

    from tests.cross_encoder import MINILM_SHAPE, write_cross_encoder

    path = str(write_cross_encoder(Path(tempfile.mkdtemp()), "minilm-cross-encoder", **MINILM_SHAPE))
words = "cat dog food meat milk market price river mountain city music paper light water stone tree".split()
docs = [" ".join(words[(i * 7 + k * 3) % len(words)] for k in range(30 + i % 20)) + "." for i in range(100)]
query = "what do cats and dogs eat"
p = embedding_params(with_defaults({}, EMBEDDING_LOAD_KEYS)); p.n_threads = 1; p.flash_attn = 0; p.n_batch = RERANK_BATCH_TOKENS; p.pack_tokens = RERANK_PACK_TOKENS
model, _ = lms.reranker_model(path).instance.native()
ctx = _core.RerankContext(model, p)
ctx.score(query, docs[:2])
exe = _reference.program("llama-embedding")
def ref(pairs, extra):
    prompt = "\n".join(f"{query}\t{d}" for d in pairs)
    t = time.perf_counter()
    subprocess.run([str(exe), "-m", path, "--pooling", "rank", "--embd-normalize", "-1", "--embd-output-format", "raw",
                    "-t", "1", "-fa", "off", "-c", "512", *extra, "-p", prompt], capture_output=True, check=True)
    return time.perf_counter() - t
times = {"lmfast": [], "llama-embedding default": [], "llama-embedding -b 512": []}
for rep in range(3):
    t = time.perf_counter(); ctx.score(query, docs); times["lmfast"].append(time.perf_counter() - t)
    for name, extra in (("llama-embedding default", []), ("llama-embedding -b 512", ["-b", "512", "-ub", "512"])):
        times[name].append(ref(docs, extra) - ref(docs[:1], extra))
for name, ts in times.items():
    m = statistics.median(ts)
    print(f"{name:26s} {m:6.2f} s  {100 / m:5.1f} docs/s  runs {[round(x, 2) for x in ts]}")
