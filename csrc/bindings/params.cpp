// One request's parameters as Python passes them to Engine.submit (the engine's own
// GenerationParams), and the grammar of a JSON schema that goes into them. lmfast.llm fills every
// field from the prediction config (config.py holds the defaults); a chat's tool-call format comes
// with its ChatPrompt, not through these fields.
#include "bindings.h"

#include <pybind11/stl.h>

#include "engine.h"
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
    c.def_property(
        "context_overflow", [](const GenerationParams & p) { return context_overflow_name(p.overflow); },
        [](GenerationParams & p, const std::string & v) { p.overflow = parse_context_overflow(v); });
    c.def_readwrite("n_threads", &GenerationParams::n_threads, "0: the engine's");
    sampling_field(c, "grammar_lazy", &SamplingParams::grammar_lazy);
    sampling_field(c, "grammar_trigger_patterns", &SamplingParams::grammar_trigger_patterns);
}

}  // namespace

void register_params(py::module_ & m) {
    register_generation_params(m);
    m.def("json_schema_to_grammar", &schema_grammar, py::arg("schema"), py::call_guard<py::gil_scoped_release>(),
          "GBNF grammar for a JSON schema (given as JSON text), within csrc/schema_budget.h's limits; runs "
          "without the GIL.");
}

}  // namespace lmfast::bindings
