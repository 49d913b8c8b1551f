// A rendered chat (chat_prompt.h) and its tool-call format; the filter that keeps call markers out
// of streamed text (detokenizer.h).
#include "bindings.h"

#include <pybind11/stl.h>

#include "chat_prompt.h"
#include "detokenizer.h"
#include "tool_calls.h"

namespace lmfast::bindings {

py::dict chat_output_to_dict(const ChatFormat & f, const std::string & text) {
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

void register_chat_prompt(py::module_ & m) {
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
        .def("parse", &chat_output_to_dict, py::arg("text"), "Content, reasoning and tool calls of generated text.");
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

}  // namespace lmfast::bindings
