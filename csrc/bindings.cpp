// pybind11 module lmfast._core: type conversion and GIL handling only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>

#include "backends.h"
#include "link_wraps.h"
#include "chat_prompt.h"
#include "common.h"
#include "embedding.h"
#include "engine.h"
#include "errors.h"
#include "gguf_check.h"
#include "json-schema-to-grammar.h"
#include "log_filter.h"
#include "model.h"
#include "schema_budget.h"
#include "tool_calls.h"

namespace py = pybind11;
using namespace lmfast;

namespace {

[[noreturn]] void raise_as(const char * cls_name, const char * msg) {
    py::object cls = py::module_::import("lmfast.errors").attr(cls_name);
    // Messages may quote bytes from a corrupt file: decode leniently.
    PyObject * text = PyUnicode_DecodeUTF8(msg, static_cast<Py_ssize_t>(std::strlen(msg)), "replace");
    if (!text) throw py::error_already_set();
    PyErr_SetObject(cls.ptr(), text);
    Py_DECREF(text);
    throw py::error_already_set();
}

// Text from the engine is valid UTF-8 by construction (Utf8Stream); decode with
// "replace" anyway so that odd bytes from a model can never raise here.
py::str to_py_str(const std::string & s) {
    PyObject * o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

// Blocks with the GIL released, waking every 50 ms to let Python deliver signals:
// a KeyboardInterrupt cancels the request and propagates. While the prompt is being
// evaluated, each wake-up also passes its progress to `on_progress` (when given) if it moved.
template <typename F>
bool wait_interruptibly(Request & req, F && wait_once, const py::object & on_progress = py::none()) {
    float last = 0.0f;  // the caller sent 0.0 itself
    for (;;) {
        bool ready;
        {
            py::gil_scoped_release nogil;
            ready = wait_once();
        }
        if (ready) return true;
        if (PyErr_CheckSignals() != 0) {
            req.cancel();
            throw py::error_already_set();
        }
        if (!on_progress.is_none()) {
            const float p = req.prompt_progress();
            if (p > last && p < 1.0f) {
                last = p;
                on_progress(p);
            }
        }
    }
}

py::dict stats_to_dict(const RequestStats & s) {
    py::dict d;
    d["prompt_tokens"] = s.prompt_tokens;
    d["cached_tokens"] = s.cached_tokens;
    d["restored_tokens"] = s.restored_tokens;
    d["predicted_tokens"] = s.predicted_tokens;
    d["time_to_first_token"] = s.time_to_first_token;
    d["prompt_eval_time"] = s.prompt_eval_time;
    d["generation_time"] = s.generation_time;
    d["queue_time"] = s.queue_time;
    d["stop_reason"] = stop_reason_name(s.stop_reason);
    d["prompt_tokens_dropped"] = s.prompt_tokens_dropped;
    d["context_shifts"] = s.context_shifts;
    d["n_threads"] = s.n_threads;
    d["draft_tokens"] = s.draft_tokens;
    d["accepted_draft_tokens"] = s.accepted_draft_tokens;
    d["rejected_draft_tokens"] = s.rejected_draft_tokens;
    d["ignored_draft_tokens"] = s.ignored_draft_tokens;
    d["error"] = s.error;
    d["tokens"] = s.tokens;
    return d;
}


// EmbeddingContext: lmfast.embedding's native half. The GIL is released while
// texts are tokenized and encoded; the vectors become Python lists after.
void bind_embedding(py::module_ & m) {
    py::class_<EmbeddingContext, std::shared_ptr<EmbeddingContext>>(m, "EmbeddingContext")
        .def(py::init([](std::shared_ptr<Model> model, int n_ctx, int n_batch, int n_seq_max, int n_threads,
                         float rope_freq_base, float rope_freq_scale, int flash_attn) {
                 EmbeddingParams p;
                 p.flash_attn = flash_attn;
                 p.n_ctx = n_ctx;
                 p.n_batch = n_batch;
                 p.n_seq_max = n_seq_max;
                 p.n_threads = n_threads;
                 p.rope_freq_base = rope_freq_base;
                 p.rope_freq_scale = rope_freq_scale;
                 return std::make_shared<EmbeddingContext>(std::move(model), p);
             }),
             py::arg("model"), py::arg("n_ctx") = 0, py::arg("n_batch") = 0, py::arg("n_seq_max") = 64,
             py::arg("n_threads") = -1, py::arg("rope_freq_base") = 0.0f, py::arg("rope_freq_scale") = 0.0f,
             py::arg("flash_attn") = -1, py::call_guard<py::gil_scoped_release>())
        .def("embed",
             [](EmbeddingContext & self, const std::vector<std::string> & texts) {
                 std::vector<std::vector<float>> out;
                 {
                     py::gil_scoped_release nogil;
                     out = self.embed(texts);
                 }
                 return out;
             },
             py::arg("texts"), "Unit-length pooled embeddings, one per text.")
        .def("close", &EmbeddingContext::close, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("n_ctx", &EmbeddingContext::n_ctx)
        .def_property_readonly("n_batch", &EmbeddingContext::n_batch)
        .def_property_readonly("n_seq_max", &EmbeddingContext::n_seq_max)
        .def_property_readonly("n_embd", &EmbeddingContext::n_embd)
        .def_property_readonly("n_threads", &EmbeddingContext::n_threads)
        .def_property_readonly("pooling", &EmbeddingContext::pooling)
        .def_property_readonly("decode_calls", &EmbeddingContext::decode_calls)
        .def_property_readonly("model", &EmbeddingContext::model);
}

// Registered backends and their devices, as ggml sees them now (backends.h).
py::dict backends_now() {
    py::list regs;
    for (const BackendInfo & b : list_backends()) {
        py::dict feats;
        for (const auto & [name, value] : b.features) feats[name.c_str()] = value;
        py::dict r;
        r["name"] = b.name;
        r["n_devices"] = b.n_devices;
        r["features"] = feats;
        r["library"] = b.library;
        regs.append(r);
    }
    py::list devs;
    for (const DeviceInfo & d : list_devices()) {
        py::dict o;
        o["index"] = d.index;
        o["name"] = d.name;
        o["description"] = d.description;
        o["type"] = d.type;
        o["backend"] = d.backend;
        o["memory_free"] = d.memory_free;
        o["memory_total"] = d.memory_total;
        devs.append(o);
    }
    py::dict out;
    out["backends"] = regs;
    out["devices"] = devs;
    return out;
}

// A GGUF value as the Python type that holds it; arrays as (element type name, count).
py::object gguf_value(const GgufKv & kv) {
    switch (kv.kind()) {
        case GgufKv::Kind::Unsigned: return py::int_(kv.u);
        case GgufKv::Kind::Signed: return py::int_(kv.i);
        case GgufKv::Kind::Float: return py::float_(kv.f);
        case GgufKv::Kind::Bool: return py::bool_(kv.i != 0);
        case GgufKv::Kind::String: return to_py_str(kv.s);
        case GgufKv::Kind::Array: break;
    }
    return py::make_tuple(gguf_type_name(kv.array_type), kv.array_len);
}

// One request's parameters as Python passes them to Engine.submit: the engine's own
// GenerationParams. lmfast.llm fills every field from the prediction config (config.py holds
// the defaults); a chat's tool-call format comes with its ChatPrompt, not through these fields.
template <typename T>
void sampling_field(py::class_<GenerationParams> & c, const char * name, T SamplingParams::*field) {
    c.def_property(
        name, [field](const GenerationParams & p) { return p.sampling.*field; },
        [field](GenerationParams & p, T v) { p.sampling.*field = v; });
}

void bind_submit_params(py::module_ & m) {
    py::class_<GenerationParams> c(m, "GenerationParams",
                               "One request's generation parameters for Engine.submit; keyword arguments set fields.");
    c.def(py::init([](const py::kwargs & fields) {
        GenerationParams p;
        py::object self = py::cast(p);
        for (const auto & [k, v] : fields) {
            const std::string key = py::str(k);
            if (!py::hasattr(self, key.c_str())) throw py::type_error("GenerationParams has no field '" + key + "'");
            py::setattr(self, k, v);
        }
        return self.cast<GenerationParams>();
    }));
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
        "seed", [](const GenerationParams & p) { return p.sampling.seed == LLAMA_DEFAULT_SEED ? -1LL : p.sampling.seed; },
        [](GenerationParams & p, int64_t v) { p.sampling.seed = v < 0 ? LLAMA_DEFAULT_SEED : static_cast<uint32_t>(v); },
        "-1: a random seed");
    c.def_property(
        "max_tokens", [](const GenerationParams & p) { return p.max_tokens; },
        [](GenerationParams & p, int32_t v) { p.max_tokens = v; }, "< 0: until EOS or the context is full");
    c.def_property(
        "stop", [](const GenerationParams & p) { return p.stop_strings; },
        [](GenerationParams & p, std::vector<std::string> v) { p.stop_strings = std::move(v); });
    c.def_property(
        "ignore_eos", [](const GenerationParams & p) { return p.ignore_eos; },
        [](GenerationParams & p, bool v) { p.ignore_eos = v; });
    c.def_readwrite("draft_max", &GenerationParams::draft_max, "n-gram drafts of at most this many tokens; 0: off");
    c.def_readwrite("draft_min", &GenerationParams::draft_min, "shorter drafts are not used");
    c.def_property(
        "context_overflow", [](const GenerationParams & p) { return context_overflow_name(p.overflow); },
        [](GenerationParams & p, const std::string & v) { p.overflow = parse_context_overflow(v); });
    c.def_property(
        "n_threads", [](const GenerationParams & p) { return p.n_threads; },
        [](GenerationParams & p, int32_t v) { p.n_threads = v; }, "0: the engine's");
    sampling_field(c, "grammar_lazy", &SamplingParams::grammar_lazy);
    sampling_field(c, "grammar_trigger_patterns", &SamplingParams::grammar_trigger_patterns);
}

// Content, reasoning and tool calls of generated text by a format's parser (tool_calls.h).
py::dict parse_to_dict(const ChatFormat & f, const std::string & text) {
    ParsedChatOutput r;
    {
        py::gil_scoped_release nogil;
        r = parse_chat_output(text, f.parser, f.format, f.generation_prompt);
    }
    py::list calls;
    for (const auto & c : r.tool_calls) {
        py::dict d;
        d["name"] = to_py_str(c.name);
        d["arguments"] = to_py_str(c.arguments);
        d["id"] = to_py_str(c.id);
        calls.append(d);
    }
    py::dict d;
    d["content"] = to_py_str(r.content);
    d["reasoning"] = to_py_str(r.reasoning);
    d["tool_calls"] = calls;
    d["error"] = r.error.empty() ? py::object(py::none()) : py::object(to_py_str(r.error));
    return d;
}

void bind_chat_prompt(py::module_ & m) {
    py::class_<ChatFormat, std::shared_ptr<ChatFormat>>(m, "ChatFormat",
                                                        "A template's tool-call format, resolved against the vocabulary.")
        .def_readonly("format", &ChatFormat::format)
        .def_readonly("parser", &ChatFormat::parser)
        .def_readonly("generation_prompt", &ChatFormat::generation_prompt)
        .def_readonly("grammar", &ChatFormat::grammar)
        .def_readonly("grammar_lazy", &ChatFormat::grammar_lazy)
        .def_readonly("grammar_triggers", &ChatFormat::triggers)
        .def_readonly("preserved", &ChatFormat::preserved)
        .def_readonly("additional_stops", &ChatFormat::additional_stops)
        .def_readonly("call_markers", &ChatFormat::call_markers)
        .def("parse", &parse_to_dict, py::arg("text"), "Content, reasoning and tool calls of generated text.");
    py::class_<ChatPrompt>(m, "ChatPrompt", "A rendered, tokenized chat (chat_prompt.h); Engine.submit takes it.")
        .def_property_readonly("text", [](const ChatPrompt & p) { return to_py_str(p.text); })
        .def_readonly("tokens", &ChatPrompt::tokens)
        .def_property_readonly("format", [](const ChatPrompt & p) {
            return std::const_pointer_cast<ChatFormat>(p.format);  // read-only fields only
        });
    py::class_<CallFilter>(m, "CallFilter", "Keeps tool-call syntax out of streamed text (detokenizer.h).")
        .def(py::init<std::vector<std::string>>(), py::arg("markers"))
        .def("push", [](CallFilter & f, const std::string & text) { return to_py_str(f.push(text)); }, py::arg("text"))
        .def("flush", [](CallFilter & f) { return to_py_str(f.flush()); });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    bind_submit_params(m);  // before Engine, whose submit() defaults to one
    bind_chat_prompt(m);
    m.doc() = "lmfast native core: llama.cpp model loading, engine, sampling";

    install_log_filter();
    load_backend_modules();  // before llama_backend_init (backends.h)
    llama_backend_init();

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ModelLoadError & e) {
            raise_as("ModelLoadError", e.what());
        } catch (const InvalidArgument & e) {
            raise_as("LMStudioValueError", e.what());
        } catch (const ModelUnloaded & e) {
            raise_as("ModelUnloadedError", e.what());
        } catch (const TemplateError & e) {
            raise_as("TemplateError", e.what());
        } catch (const std::bad_alloc &) {
            raise_as("LMStudioRuntimeError", "out of memory");
        } catch (const py::error_already_set &) {
            throw;  // a Python exception on its way up (KeyboardInterrupt, ...)
        } catch (const py::builtin_exception &) {
            throw;  // pybind11's own, mapped by its translator (StopIteration, IndexError, ...)
        } catch (const std::exception & e) {
            // Anything else from llama.cpp or the standard library: still an lmfast error.
            raise_as("LMStudioRuntimeError", e.what());
        }
    });

    m.def("set_log_level", &set_log_level,
          "Sets how much of llama.cpp's log reaches stderr: debug, info, warn, error or none.");
    m.def("system_info", [] { return std::string(llama_print_system_info()); });
    m.def("default_threads", [] { return common_cpu_get_num_math(); },
          "Threads lmfast decodes with by default (physical cores, as llama.cpp counts them).");
    m.def("supports_gpu_offload", [] { return llama_supports_gpu_offload(); });
    m.def("json_schema_to_grammar", [](const std::string & schema) {
        // llama.cpp's converter: a GBNF grammar whose root accepts exactly the JSON
        // documents the schema describes (the subset of JSON Schema it supports), within
        // schema_budget.h's limits (checked first: the converter's time grows with the cube
        // of an object's optional properties).
        check_schema_budget(schema);
        try {
            return json_schema_to_grammar(common_json::parse(schema));
        } catch (const std::exception & e) {
            throw InvalidArgument(std::string("the JSON schema cannot be turned into a grammar: ") + e.what());
        }
    }, py::arg("schema"), py::call_guard<py::gil_scoped_release>(),
    "GBNF grammar for a JSON schema (given as JSON text); runs without the GIL.");
    m.def("backends", &backends_now,
          "Registered ggml backends (name, features, module file) and devices (name, type, memory).");
    m.def("kv_cache_types", [] {
        py::dict d;
        for (const auto & [name, id] : kv_cache_types()) d[name.c_str()] = id;
        return d;
    }, "KV cache type names llama.cpp accepts -> ggml_type ids.");
    m.def("hugepages_status", &hugepages_status,
          "Whether large ggml buffers are advised onto transparent huge pages (csrc/hugepages.cpp), and why not.");
    m.def("link_wraps", [] {
        py::list out;
        for (const LinkWrap & w : link_wraps()) {
            out.append(py::dict(py::arg("name") = w.name, py::arg("symbol") = w.symbol, py::arg("file") = w.file,
                                py::arg("linked") = w.linked, py::arg("calls") = w.calls, py::arg("where") = w.where));
        }
        return out;
    }, "Each -Wl,--wrap of a ggml symbol (csrc/link_wraps.h): whether it is linked, and its calls so far.");
    m.def("q4_1_tiled_products", &q4_1_tiled_products,
          "Q4_1 matrix products computed by lmfast's kernel so far (csrc/q4_1_gemm.cpp); -1 where unknown.");
    m.attr("version") = LMFAST_VERSION;
    m.def("validate_gguf",
        [](const std::string & path) {
            const GgufSummary g = validate_gguf_file(path);
            py::dict d;
            d["version"] = g.version;
            d["n_tensors"] = g.n_tensors;
            d["n_kv"] = g.n_kv;
            d["data_offset"] = g.data_offset;
            d["data_size"] = g.data_size;
            d["alignment"] = g.alignment;
            return d;
        },
        py::arg("path"),
        "Checks a GGUF file's structure as Model.load does before llama.cpp reads it; raises ModelLoadError.");
    m.def("gguf_metadata",
        [](const std::string & path) {
            std::vector<GgufKv> kvs;
            {
                py::gil_scoped_release nogil;
                validate_gguf_file(path, &kvs);
            }
            py::dict d;
            for (const GgufKv & kv : kvs) d[to_py_str(kv.key)] = gguf_value(kv);
            return d;
        },
        py::arg("path"),
        "Key/value metadata of a GGUF file after the same checks as validate_gguf (ModelLoadError on a bad "
        "file); arrays as (element type name, count).");

    py::class_<Model, std::shared_ptr<Model>>(m, "Model")
        .def_static("load",
            [](const std::string & path, int n_gpu_layers, bool use_mmap, bool use_mlock, int main_gpu,
               int split_mode, const std::vector<int> & devices, const py::object & progress,
               const std::map<std::string, int64_t> & int_overrides) {
                ModelParams p;
                if (!progress.is_none()) {
                    // Called on this (loading) thread with the GIL released: take it for the call.
                    // The callable is lmfast's own reporter, which never raises.
                    p.progress = [&progress](float f) {
                        py::gil_scoped_acquire gil;
                        try {
                            progress(f);
                        } catch (py::error_already_set & e) {
                            e.discard_as_unraisable("on_load_progress");  // never through llama.cpp's loader
                        }
                    };
                }
                p.path = path;
                p.n_gpu_layers = n_gpu_layers;
                p.main_gpu = main_gpu;
                p.split_mode = split_mode;
                p.devices = devices;
                p.use_mmap = use_mmap;
                p.use_mlock = use_mlock;
                p.int_overrides.assign(int_overrides.begin(), int_overrides.end());
                py::gil_scoped_release nogil;
                return Model::load(p);
            },
            py::arg("path"), py::arg("n_gpu_layers") = 0, py::arg("use_mmap") = true, py::arg("use_mlock") = false,
            py::arg("main_gpu") = 0, py::arg("split_mode") = 1, py::arg("devices") = std::vector<int>(),
            py::arg("progress") = py::none(), py::arg("int_overrides") = std::map<std::string, int64_t>())
        .def_property_readonly("path", &Model::path)
        .def_property_readonly("n_ctx_train", &Model::n_ctx_train)
        .def_property_readonly("n_vocab", &Model::n_vocab)
        .def_property_readonly("n_params", &Model::n_params)
        .def_property_readonly("size", &Model::size)
        .def_property_readonly("description", &Model::description)
        .def_property_readonly("chat_template", [](const Model & self) { return to_py_str(self.chat_template_source()); })
        .def("metadata", [](const Model & self) {
            // Keys and values come from the file and need not be valid UTF-8.
            const auto meta = self.metadata();
            py::dict d;
            for (const auto & kv : meta) d[to_py_str(kv.first)] = to_py_str(kv.second);
            return d;
        })
        .def("tokenize", &Model::tokenize, py::arg("text"), py::arg("add_special") = true,
             py::arg("parse_special") = false, py::call_guard<py::gil_scoped_release>())
        .def("detokenize",
             [](const Model & self, const std::vector<llama_token> & tokens, bool render_special) {
                 std::string s;
                 {
                     py::gil_scoped_release nogil;
                     s = self.detokenize(tokens, render_special);
                 }
                 return to_py_str(s);
             },
             py::arg("tokens"), py::arg("render_special") = false)
        .def("token_to_piece",
             [](const Model & self, llama_token token, bool render_special) {
                 self.check_tokens({token});
                 return py::bytes(self.token_to_piece(token, render_special));
             },
             py::arg("token"), py::arg("render_special") = false,
             "The bytes of one token (possibly part of a UTF-8 character).")
        .def_property_readonly("_template_worker_pid", &Model::template_worker_pid,
                               "Process id of the template worker; -1 while none runs (after a failure, until the next render).")
        .def("apply_chat_template",
             [](const Model & self, const std::vector<std::pair<std::string, std::string>> & messages,
                bool add_generation_prompt) {
                 std::vector<ChatMessage> msgs;
                 msgs.reserve(messages.size());
                 for (const auto & rc : messages) msgs.push_back({rc.first, rc.second});
                 std::string out;
                 {
                     py::gil_scoped_release nogil;
                     out = self.apply_chat_template(msgs, add_generation_prompt);
                 }
                 return to_py_str(out);  // a template may emit bytes that are not UTF-8
             },
             py::arg("messages"), py::arg("add_generation_prompt") = true)
        .def("render_prompt",
             [](const Model & self, const std::vector<std::pair<std::string, std::string>> & messages,
                bool parse_special_in_user_text) {
                 std::vector<ChatMessage> msgs;
                 msgs.reserve(messages.size());
                 for (const auto & rc : messages) msgs.push_back({rc.first, rc.second});
                 py::gil_scoped_release nogil;
                 return render_chat_prompt(self, msgs, parse_special_in_user_text);
             },
             py::arg("messages"), py::arg("parse_special_in_user_text") = false,
             "A chat of (role, content) pairs rendered with a generation prompt and tokenized; message text that "
             "spells a control token stays text unless parse_special_in_user_text.")
        .def("render_prompt_json",
             [](const Model & self, const std::string & request, bool with_tools, const std::optional<std::string> & tmpl,
                const std::string & bos_token, const std::string & eos_token, bool parse_special_in_user_text) {
                 const PromptTemplate override_tmpl {tmpl.value_or(std::string()), bos_token, eos_token};
                 py::gil_scoped_release nogil;
                 return render_chat_prompt_json(self, request, tmpl ? &override_tmpl : nullptr, with_tools,
                                                parse_special_in_user_text);
             },
             py::arg("request"), py::arg("with_tools"), py::arg("template") = py::none(),
             py::arg("bos_token") = std::string(), py::arg("eos_token") = std::string(),
             py::arg("parse_special_in_user_text") = false,
             "A chat with tools and tool calls (chat_render.h's render_chat_json request) rendered and tokenized; "
             "with_tools keeps the template's tool-call format. template: a Jinja template used instead of the "
             "model's (bos_token/eos_token: its BOS/EOS text, \"\" for the model's).")
        .def("prompt_from_text",
             [](const Model & self, std::string text) {
                 py::gil_scoped_release nogil;
                 return chat_prompt_from_text(self, std::move(text));
             },
             py::arg("text"), "Prompt text rendered elsewhere (a manual prompt template), tokenized as a chat prompt.");

    py::class_<Request, std::shared_ptr<Request>>(m, "Request")
        .def("next_text",
             [](Request & self, const py::object & on_progress) -> py::object {
                 std::string out;
                 int32_t n_tokens = 0;
                 wait_interruptibly(
                     self, [&] { return self.wait_text(out, n_tokens, std::chrono::milliseconds(50)); }, on_progress);
                 if (!out.empty()) return py::make_tuple(to_py_str(out), n_tokens);
                 return py::none();
             },
             py::arg("on_progress") = py::none(),
             "Blocks until streamed text is available, returned as (text, n_tokens), or the request is done "
             "(returns None). on_progress(share of the prompt evaluated) while the prompt is evaluated.")
        .def("wait",
             [](Request & self, const py::object & on_progress) {
                 wait_interruptibly(self, [&] { return self.wait_done(std::chrono::milliseconds(50)); }, on_progress);
             },
             py::arg("on_progress") = py::none(), "Blocks until the request is done. KeyboardInterrupt cancels it.")
        .def("cancel", &Request::cancel)
        .def_property_readonly("cancelled", &Request::cancelled)
        .def_property_readonly("done", &Request::done)
        .def_property_readonly("text", [](Request & self) {
            if (!self.done()) throw std::logic_error("the request has not finished");
            return to_py_str(self.text());
        })
        .def("stats", [](Request & self) {
            if (!self.done()) throw std::logic_error("the request has not finished");
            return stats_to_dict(self.stats());
        })
        .def("chat_output", [](Request & self) -> py::object {
            if (!self.done()) throw std::logic_error("the request has not finished");
            if (!self.chat_format()) return py::none();
            return parse_to_dict(*self.chat_format(), self.text());
        }, "Content and tool calls of the output, by its chat's format (None without tools).");

    py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine")
        .def(py::init([](std::shared_ptr<Model> model, int n_ctx, int n_batch, int n_ubatch, int n_seq,
                         int n_threads, int n_threads_batch, int flash_attn, int type_k, int type_v,
                         bool offload_kqv, float rope_freq_base, float rope_freq_scale, int64_t spill_bytes,
                         std::string disk_dir, std::string disk_identity, int64_t disk_bytes) {
                 EngineParams p;
                 p.n_ctx = n_ctx;
                 p.n_batch = n_batch;
                 p.n_ubatch = n_ubatch;
                 p.n_seq = n_seq;
                 p.n_threads = n_threads;
                 p.n_threads_batch = n_threads_batch;
                 p.flash_attn = flash_attn;
                 p.type_k = type_k;
                 p.type_v = type_v;
                 p.offload_kqv = offload_kqv;
                 p.rope_freq_base = rope_freq_base;
                 p.rope_freq_scale = rope_freq_scale;
                 p.spill_bytes = spill_bytes;
                 p.disk_dir = std::move(disk_dir);
                 p.disk_identity = std::move(disk_identity);
                 p.disk_bytes = disk_bytes;
                 return std::make_shared<Engine>(std::move(model), p);
             }),
             py::arg("model"), py::arg("n_ctx") = 4096, py::arg("n_batch") = 2048, py::arg("n_ubatch") = 512,
             py::arg("n_seq") = 4, py::arg("n_threads") = -1, py::arg("n_threads_batch") = -1,
             py::arg("flash_attn") = -1, py::arg("type_k") = -1, py::arg("type_v") = -1,
             py::arg("offload_kqv") = true, py::arg("rope_freq_base") = 0.0f, py::arg("rope_freq_scale") = 0.0f,
             py::arg("spill_bytes") = -1, py::arg("disk_dir") = std::string(),
             py::arg("disk_identity") = std::string(), py::arg("disk_bytes") = int64_t{8} << 30,
             py::call_guard<py::gil_scoped_release>())
        .def("submit",
             [](Engine & self, std::vector<llama_token> prompt, GenerationParams p, bool stream) {
                 py::gil_scoped_release nogil;
                 return self.submit(std::move(prompt), std::move(p), stream);
             },
             py::arg("prompt"), py::arg("params") = GenerationParams(), py::kw_only(), py::arg("stream") = false,
             "Queues a request for prompt tokens (GenerationParams: the prediction's fields, lmfast.llm fills them).")
        .def("submit",
             [](Engine & self, const ChatPrompt & prompt, GenerationParams p, bool stream) {
                 py::gil_scoped_release nogil;
                 apply_chat_format(prompt.format, p);
                 return self.submit(prompt.tokens, std::move(p), stream);
             },
             py::arg("prompt"), py::arg("params") = GenerationParams(), py::kw_only(), py::arg("stream") = false,
             "Queues a request for a rendered chat: its tool-call format, if any, applies.")
        .def("eval_logits",
             [](Engine & self, const std::vector<std::vector<llama_token>> & seqs, const std::vector<int32_t> & n_prefix) {
                 std::vector<std::vector<float>> out;
                 {
                     py::gil_scoped_release nogil;
                     out = self.eval_logits(seqs, n_prefix);
                 }
                 py::list l;
                 for (const auto & v : out) {
                     l.append(py::bytes(reinterpret_cast<const char *>(v.data()), v.size() * sizeof(float)));
                 }
                 return l;
             },
             py::arg("sequences"), py::arg("n_prefix"),
             "Tests and debugging: the logits of teacher-forced token sequences evaluated together (see "
             "engine.h), as float32 bytes per sequence: (len - n_prefix + 1) rows of n_vocab each.")
        .def("persist", &Engine::persist, py::arg("tokens"), py::call_guard<py::gil_scoped_release>(),
             "Writes the sequence that holds these tokens to the disk tier; returns the tokens saved (0: none).")
        .def("take_warnings", &Engine::take_warnings,
             "Warnings from the cache tiers since the last call (a damaged cache file removed, ...).")
        .def("shutdown", &Engine::shutdown, py::call_guard<py::gil_scoped_release>())
        .def("idle_seconds", &Engine::idle_seconds)
        .def_property_readonly("n_ctx", &Engine::n_ctx)
        .def_property_readonly("n_seq", &Engine::n_seq)
        .def_property_readonly("n_streams", &Engine::n_streams)
        .def_property_readonly("n_threads", &Engine::n_threads)
        .def_property_readonly("model", &Engine::model)
        .def("counters", [](const Engine & self) {
            EngineCounters c = self.counters();
            py::dict d;
            d["requests"] = c.requests;
            d["prompt_tokens_evaluated"] = c.prompt_tokens_evaluated;
            d["prompt_tokens_cached"] = c.prompt_tokens_cached;
            d["tokens_generated"] = c.tokens_generated;
            d["decode_calls"] = c.decode_calls;
            d["generation_steps"] = c.generation_steps;
            d["generation_seq_runs"] = c.generation_seq_runs;
            d["shared_prefix_waits"] = c.shared_prefix_waits;
            d["spills"] = c.spills;
            d["restores"] = c.restores;
            d["prompt_tokens_restored"] = c.prompt_tokens_restored;
            d["spill_bytes"] = c.spill_bytes;
            d["kv_streams"] = c.kv_streams;
            d["kv_growths"] = c.kv_growths;
            d["disk_writes"] = c.disk_writes;
            d["disk_restores"] = c.disk_restores;
            d["disk_bytes"] = c.disk_bytes;
            return d;
        });

    bind_embedding(m);
}
