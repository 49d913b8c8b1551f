// The parameter structs Python fills from the config table (python/lmfast/config.py, the one place
// a default is written): ModelParams for Model.load, EngineParams for Engine, EmbeddingParams for
// EmbeddingContext, and one request's GenerationParams for Engine.submit, with the grammar of a JSON
// schema that goes into them. Each is built from keyword arguments naming its fields; Python passes
// every field. The structs' own initial values remain for C++ callers, and tests/test_defaults.py
// holds them equal to the table's. A chat's tool-call format comes with its ChatPrompt, not through
// these fields.
#include "bindings.h"

#include <pybind11/stl.h>

#include <map>

#include "embedding.h"
#include "engine.h"
#include "model.h"
#include "schema_grammar.h"

namespace lmfast::bindings {

namespace {

template <typename T>
void sampling_field(py::class_<GenerationParams> & c, const char * name, T SamplingParams::*field) {
    c.def_property(
        name, [field](const GenerationParams & p) { return p.sampling.*field; },
        [field](GenerationParams & p, T v) { p.sampling.*field = v; });
}

void register_generation_params(py::module_ & m) {
    py::class_<GenerationParams> c(m, "GenerationParams",
                                   "One request's generation parameters for Engine.submit; keyword arguments set fields.");
    c.def(py::init([](const py::kwargs & fields) { return from_kwargs<GenerationParams>("GenerationParams", fields); }));
    sampling_field(c, "temperature", &SamplingParams::temperature);
    sampling_field(c, "top_k", &SamplingParams::top_k);
    sampling_field(c, "top_p", &SamplingParams::top_p);
    sampling_field(c, "min_p", &SamplingParams::min_p);
    sampling_field(c, "repeat_penalty", &SamplingParams::repeat_penalty);
    sampling_field(c, "repeat_last_n", &SamplingParams::repeat_last_n);
    sampling_field(c, "frequency_penalty", &SamplingParams::frequency_penalty);
    sampling_field(c, "presence_penalty", &SamplingParams::presence_penalty);
    sampling_field(c, "grammar", &SamplingParams::grammar);
    c.def_property(
        "seed", [](const GenerationParams & p) { return requested_seed(p.sampling.seed); },
        [](GenerationParams & p, int64_t v) { p.sampling.seed = sampling_seed(v); }, "-1: a random seed");
    c.def_readwrite("max_tokens", &GenerationParams::max_tokens, "< 0: until EOS or the context is full");
    c.def_readwrite("stop", &GenerationParams::stop_strings);
    c.def_readwrite("ignore_eos", &GenerationParams::ignore_eos);
    c.def_readwrite("draft_max", &GenerationParams::draft_max, "n-gram drafts of at most this many tokens; 0: off");
    c.def_readwrite("draft_min", &GenerationParams::draft_min, "shorter drafts are not used");
    c.def_readwrite("draft_p_min", &GenerationParams::draft_p_min,
                    "a draft model stops at a token below this probability (among its top 10); 0: never");
    c.def_readwrite("draft_model", &GenerationParams::draft_model,
                    "a DraftModel drafting in place of the n-gram lookup (draft_max > 0); None: the lookup");
    c.def_property(
        "context_overflow", [](const GenerationParams & p) { return context_overflow_name(p.overflow); },
        [](GenerationParams & p, const std::string & v) { p.overflow = parse_context_overflow(v); });
    c.def_readwrite("n_threads", &GenerationParams::n_threads, "0: the engine's");
    c.def_readwrite("logprobs", &GenerationParams::logprobs,
                    "< 0: off; else each sampled token's log-probability and this many top alternatives");
    c.def_readwrite("lora_scales", &GenerationParams::lora_scales,
                    "(adapter id, scale) pairs for this request; adapters not named keep the engine's default");
    sampling_field(c, "grammar_lazy", &SamplingParams::grammar_lazy);
    sampling_field(c, "grammar_trigger_patterns", &SamplingParams::grammar_trigger_patterns);
}

void register_model_params(py::module_ & m) {
    py::class_<ModelParams> c(m, "ModelParams", "Model.load's parameters (model.h); keyword arguments set fields.");
    c.def(py::init([](const py::kwargs & fields) { return from_kwargs<ModelParams>("ModelParams", fields); }));
    c.def_readwrite("path", &ModelParams::path);
    c.def_readwrite("n_gpu_layers", &ModelParams::n_gpu_layers, "-1: all");
    c.def_readwrite("main_gpu", &ModelParams::main_gpu);
    c.def_readwrite("split_mode", &ModelParams::split_mode, "llama_split_mode: 0 none, 1 layer, 2 row");
    c.def_readwrite("devices", &ModelParams::devices, "ggml device indices to offload to; empty: every GPU");
    c.def_readwrite("use_mmap", &ModelParams::use_mmap);
    c.def_readwrite("use_mlock", &ModelParams::use_mlock);
    c.def_property(
        "int_overrides",
        [](const ModelParams & p) { return std::map<std::string, int64_t>(p.int_overrides.begin(), p.int_overrides.end()); },
        [](ModelParams & p, const std::map<std::string, int64_t> & v) { p.int_overrides.assign(v.begin(), v.end()); },
        "integer metadata values that replace the file's at load");
}

void register_engine_params(py::module_ & m) {
    py::class_<EngineParams> c(m, "EngineParams", "An Engine's parameters (engine.h); keyword arguments set fields.");
    c.def(py::init([](const py::kwargs & fields) { return from_kwargs<EngineParams>("EngineParams", fields); }));
    c.def_readwrite("n_ctx", &EngineParams::n_ctx);
    c.def_readwrite("n_batch", &EngineParams::n_batch);
    c.def_readwrite("n_ubatch", &EngineParams::n_ubatch);
    c.def_readwrite("n_seq", &EngineParams::n_seq);
    c.def_readwrite("n_threads", &EngineParams::n_threads, "-1: physical cores");
    c.def_readwrite("n_threads_batch", &EngineParams::n_threads_batch, "<= 0: n_threads");
    c.def_readwrite("flash_attn", &EngineParams::flash_attn, "-1 auto, 0 off, 1 on");
    c.def_readwrite("type_k", &EngineParams::type_k, "ggml_type of the K cache; -1: f16");
    c.def_readwrite("type_v", &EngineParams::type_v, "ggml_type of the V cache; -1: f16");
    c.def_readwrite("offload_kqv", &EngineParams::offload_kqv);
    c.def_readwrite("rope_freq_base", &EngineParams::rope_freq_base, "0: the model's");
    c.def_readwrite("loras", &EngineParams::loras, "LoRA adapters: (path, scale) pairs");
    c.def_readwrite("rope_freq_scale", &EngineParams::rope_freq_scale, "0: the model's");
    c.def_readwrite("spill_bytes", &EngineParams::spill_bytes, "-1: auto (free memory / 8, at most 4 GiB); 0: off");
    c.def_readwrite("disk_dir", &EngineParams::disk_dir, "empty: no disk tier");
    c.def_readwrite("disk_identity", &EngineParams::disk_identity);
    c.def_readwrite("disk_bytes", &EngineParams::disk_bytes);
}

void register_embedding_params(py::module_ & m) {
    py::class_<EmbeddingParams> c(m, "EmbeddingParams",
                                  "An EmbeddingContext's parameters (embedding.h); keyword arguments set fields.");
    c.def(py::init([](const py::kwargs & fields) { return from_kwargs<EmbeddingParams>("EmbeddingParams", fields); }));
    c.def_readwrite("n_ctx", &EmbeddingParams::n_ctx, "0: the model's trained context");
    c.def_readwrite("n_batch", &EmbeddingParams::n_batch, "0: max(n_ctx, 1024)");
    c.def_readwrite("n_seq_max", &EmbeddingParams::n_seq_max);
    c.def_readwrite("pack_tokens", &EmbeddingParams::pack_tokens, "0: n_batch");
    c.def_readwrite("n_threads", &EmbeddingParams::n_threads, "-1: physical cores");
    c.def_readwrite("rope_freq_base", &EmbeddingParams::rope_freq_base, "0: the model's");
    c.def_readwrite("rope_freq_scale", &EmbeddingParams::rope_freq_scale, "0: the model's");
    c.def_readwrite("flash_attn", &EmbeddingParams::flash_attn, "-1 auto, 0 off, 1 on");
}

}  // namespace

void register_params(py::module_ & m) {
    register_model_params(m);
    register_engine_params(m);
    register_embedding_params(m);
    register_generation_params(m);
    m.def("json_schema_to_grammar", &schema_grammar, py::arg("schema"), py::call_guard<py::gil_scoped_release>(),
          "GBNF grammar for a JSON schema (given as JSON text), within csrc/schema_budget.h's limits; runs "
          "without the GIL.");
}

}  // namespace lmfast::bindings
