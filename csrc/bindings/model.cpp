// A loaded model (model.h): load, metadata, vocabulary, and its chats rendered into ChatPrompts
// (chat_prompt.h). Rendering and tokenizing run without the GIL.
#include "bindings.h"

#include <pybind11/stl.h>

#include <optional>

#include "chat_prompt.h"
#include "model.h"

namespace lmfast::bindings {

namespace {

using RoleContent = std::vector<std::pair<std::string, std::string>>;

std::vector<ChatMessage> to_messages(const RoleContent & messages) {
    std::vector<ChatMessage> msgs;
    msgs.reserve(messages.size());
    for (const auto & rc : messages) msgs.push_back({rc.first, rc.second});
    return msgs;
}

// llama.cpp's loader calls `progress` on the loading thread, which runs with the GIL released:
// the call takes it. The callable is lmfast's own reporter, which never raises; if it did, the
// exception is reported as unraisable, never thrown through llama.cpp's loader. Holds a reference
// to `progress` (no copy, whose refcount would change without the GIL): it must outlive the load.
std::function<void(float)> progress_callback(const py::object & progress) {
    if (progress.is_none()) return {};
    return [&progress](float f) {
        py::gil_scoped_acquire gil;
        try {
            progress(f);
        } catch (py::error_already_set & e) {
            e.discard_as_unraisable("on_load_progress");
        }
    };
}

std::shared_ptr<Model> load(ModelParams p, const py::object & progress) {
    p.progress = progress_callback(progress);
    py::gil_scoped_release nogil;
    return Model::load(p);
}

void register_vocabulary(py::class_<Model, std::shared_ptr<Model>> & c) {
    c.def("tokenize", &Model::tokenize, py::arg("text"), py::arg("add_special") = true,
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
             "The bytes of one token (possibly part of a UTF-8 character).");
}

void register_rendering(py::class_<Model, std::shared_ptr<Model>> & c) {
    c.def("apply_chat_template",
          [](const Model & self, const RoleContent & messages, bool add_generation_prompt) {
              const std::vector<ChatMessage> msgs = to_messages(messages);
              std::string out;
              {
                  py::gil_scoped_release nogil;
                  out = self.apply_chat_template(msgs, add_generation_prompt);
              }
              return to_py_str(out);  // a template may emit bytes that are not UTF-8
          },
          py::arg("messages"), py::arg("add_generation_prompt") = true)
        .def("render_prompt",
             [](const Model & self, const RoleContent & messages, bool parse_special_in_user_text) {
                 const std::vector<ChatMessage> msgs = to_messages(messages);
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
}

}  // namespace

void register_model(py::module_ & m) {
    py::class_<Model, std::shared_ptr<Model>> c(m, "Model");
    c.def_static("load", &load, py::arg("params"), py::arg("progress") = py::none(),
                 "Loads a model (ModelParams, filled from the load config); progress(share of tensor data read).")
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
        .def_property_readonly("_template_worker_pid", &Model::template_worker_pid,
                               "Process id of the template worker; -1 while none runs (after a failure, until the next render).");
    register_vocabulary(c);
    register_rendering(c);
}

}  // namespace lmfast::bindings
