// The engine (engine.h) and its requests: submit, stream, wait, statistics. Every wait releases
// the GIL; a consumer is called once per text fragment, never per token.
#include "bindings.h"

#include <pybind11/stl.h>

#include <chrono>

#include "chat_prompt.h"
#include "engine.h"

namespace lmfast::bindings {

namespace {

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

const Request & finished(const Request & req) {
    if (!req.done()) throw std::logic_error("the request has not finished");
    return req;
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

py::dict counters_to_dict(const EngineCounters & c) {
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
    d["forked_sequences"] = c.forked_sequences;
    d["images_encoded"] = c.images_encoded;
    d["lora_switches"] = c.lora_switches;
    return d;
}

// Logits as float32 bytes per sequence (numpy.frombuffer reads them without a copy per value).
py::list logits_to_bytes(const std::vector<std::vector<float>> & rows) {
    py::list l;
    for (const auto & v : rows) l.append(py::bytes(reinterpret_cast<const char *>(v.data()), v.size() * sizeof(float)));
    return l;
}

// Log-probabilities as (token id, piece bytes, logprob, [(id, piece bytes, logprob), ...]) tuples;
// the pieces with control tokens rendered, as the output text has them.
py::list logprobs_to_list(const std::vector<TokenLogprob> & lps, const Model & model) {
    py::list out;
    auto piece = [&](llama_token t) { return py::bytes(model.token_to_piece(t, true)); };
    for (const auto & lp : lps) {
        py::list top;
        for (const auto & [t, v] : lp.top) top.append(py::make_tuple(t, piece(t), v));
        out.append(py::make_tuple(lp.token, piece(lp.token), lp.logprob, top));
    }
    return out;
}

void register_request(py::module_ & m) {
    py::class_<Request, std::shared_ptr<Request>>(m, "Request")
        .def("next_text",
             [](Request & self, const py::object & on_progress) -> py::object {
                 std::string out;
                 int32_t n_tokens = 0;
                 wait_interruptibly(
                     self, [&] { return self.wait_text(out, n_tokens, std::chrono::milliseconds(50)); }, on_progress);
                 if (!out.empty() || !self.done()) return py::make_tuple(to_py_str(out), n_tokens);
                 return py::none();
             },
             py::arg("on_progress") = py::none(),
             "Blocks until streamed text is available, returned as (text, n_tokens) (text \"\" when only a "
             "tool call being written grew: take_call_deltas), or the request is done (returns None). on_progress(share of the prompt evaluated) while the prompt is evaluated.")
        .def("wait",
             [](Request & self, const py::object & on_progress) {
                 wait_interruptibly(self, [&] { return self.wait_done(std::chrono::milliseconds(50)); }, on_progress);
             },
             py::arg("on_progress") = py::none(), "Blocks until the request is done. KeyboardInterrupt cancels it.")
        .def_property_readonly("last_text_drafted", &Request::last_text_drafted,
                               "Whether the text next_text returned last holds an accepted draft token.")
        .def("take_logprobs",
             [](Request & self, const Model & model) { return logprobs_to_list(self.take_logprobs(), model); },
             py::arg("model"),
             "The log-probabilities of the tokens sampled since the last call (GenerationParams.logprobs >= 0), "
             "as (token, piece bytes, logprob, [(token, piece bytes, logprob), ...]) tuples.")
        .def("take_call_deltas",
             [](Request & self) {
                 std::vector<ToolCallDelta> deltas;
                 {
                     py::gil_scoped_release nogil;
                     deltas = self.take_call_deltas();
                 }
                 py::list out;
                 for (const auto & d : deltas) {
                     out.append(py::make_tuple(d.index, to_py_str(d.id), to_py_str(d.name), to_py_str(d.arguments),
                                               d.first));
                 }
                 return out;
             },
             "Streamed requests with tools: what the calls being written gained since the last call, as (index, "
             "id, name, arguments piece, first) tuples (the name in a call's first, the arguments after it).")
        .def("cancel", &Request::cancel)
        .def_property_readonly("cancelled", &Request::cancelled)
        .def_property_readonly("done", &Request::done)
        .def_property_readonly("text", [](const Request & self) { return to_py_str(finished(self).text()); })
        .def("stats", [](const Request & self) { return stats_to_dict(finished(self).stats()); })
        .def("chat_output", [](const Request & self) -> py::object {
            if (!finished(self).chat_format()) return py::none();
            return chat_output_to_dict(*self.chat_format(), self.text());
        }, "Content and tool calls of the output, by its chat's format (None without tools).");
}

}  // namespace

void register_engine(py::module_ & m) {
    register_request(m);
    py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine")
        .def(py::init<std::shared_ptr<Model>, const EngineParams &>(), py::arg("model"), py::arg("params"),
             py::call_guard<py::gil_scoped_release>())
        .def("submit",
             py::overload_cast<std::vector<llama_token>, GenerationParams, bool>(&Engine::submit),
             py::arg("prompt"), py::arg("params"), py::kw_only(), py::arg("stream") = false,
             py::call_guard<py::gil_scoped_release>(),
             "Queues a request for prompt tokens (GenerationParams: the prediction's fields, lmfast.llm fills them).")
        .def("submit",
             py::overload_cast<const ChatPrompt &, GenerationParams, bool>(&Engine::submit),
             py::arg("prompt"), py::arg("params"), py::kw_only(), py::arg("stream") = false,
             py::call_guard<py::gil_scoped_release>(),
             "Queues a request for a rendered chat: its tool-call format, if any, applies.")
        .def("submit_n",
             py::overload_cast<std::vector<llama_token>, GenerationParams, int32_t, bool>(&Engine::submit_n),
             py::arg("prompt"), py::arg("params"), py::arg("n"), py::kw_only(), py::arg("stream") = false,
             py::call_guard<py::gil_scoped_release>(),
             "Queues n completions of one prompt: evaluated once, then forked (engine.h submit_n).")
        .def("submit_n",
             py::overload_cast<const ChatPrompt &, GenerationParams, int32_t, bool>(&Engine::submit_n),
             py::arg("prompt"), py::arg("params"), py::arg("n"), py::kw_only(), py::arg("stream") = false,
             py::call_guard<py::gil_scoped_release>(), "submit_n for a rendered chat.")
        .def("eval_logits",
             [](Engine & self, const std::vector<std::vector<llama_token>> & seqs, const std::vector<int32_t> & n_prefix) {
                 std::vector<std::vector<float>> out;
                 {
                     py::gil_scoped_release nogil;
                     out = self.eval_logits(seqs, n_prefix);
                 }
                 return logits_to_bytes(out);
             },
             py::arg("sequences"), py::arg("n_prefix"),
             "Tests and debugging: the logits of teacher-forced token sequences evaluated together (see "
             "engine.h), as float32 bytes per sequence: (len - n_prefix + 1) rows of n_vocab each.")
        .def("persist", &Engine::persist, py::arg("tokens"), py::call_guard<py::gil_scoped_release>(),
             "Writes the sequence that holds these tokens to the disk tier; returns the tokens saved (0: none).")
        .def("take_warnings", &Engine::take_warnings,
             "Warnings from the cache tiers since the last call (a damaged cache file removed, ...).")
        .def("lora_defaults", &Engine::lora_defaults,
             "The LoRA scales requests get for adapters they do not name, one per adapter in load order.")
        .def("set_lora_defaults", &Engine::set_lora_defaults, py::arg("scales"),
             "Sets those scales from (adapter id, scale) pairs (llama-server's POST /lora-adapters).")
        .def("shutdown", &Engine::shutdown, py::call_guard<py::gil_scoped_release>())
        .def("idle_seconds", &Engine::idle_seconds)
        .def_property_readonly("n_ctx", &Engine::n_ctx)
        .def_property_readonly("n_seq", &Engine::n_seq)
        .def_property_readonly("n_streams", &Engine::n_streams)
        .def_property_readonly("n_threads", &Engine::n_threads)
        .def_property_readonly("model", &Engine::model)
        // The engine's lock is taken without the GIL: an engine stuck while holding it must not
        // freeze the caller's Python (the Ray replica's health probe reads these to find a stall).
        .def("counters", [](const Engine & self) {
            EngineCounters c;
            {
                py::gil_scoped_release nogil;
                c = self.counters();
            }
            return counters_to_dict(c);
        });
}

}  // namespace lmfast::bindings
