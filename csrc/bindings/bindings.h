// lmfast._core's registration functions, one per bound family of classes (module.cpp calls them
// in order), and the conversions they share. Binding files convert types and handle the GIL;
// what a call does is in the C++ it binds.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

namespace lmfast {
struct ChatFormat;
}

namespace lmfast::bindings {

namespace py = pybind11;

void register_errors(py::module_ & m);      // errors.cpp: C++ exceptions -> lmfast.errors
void register_system(py::module_ & m);      // system.cpp: log level, threads, backends, link wraps, KV types
void register_gguf(py::module_ & m);        // gguf.cpp: validate_gguf, gguf_metadata
void register_params(py::module_ & m);      // params.cpp: GenerationParams, json_schema_to_grammar
void register_chat_prompt(py::module_ & m); // chat_prompt.cpp: ChatFormat, ChatPrompt, CallFilter
void register_model(py::module_ & m);       // model.cpp: Model
void register_engine(py::module_ & m);      // engine.cpp: Request, Engine
void register_draft_model(py::module_ & m); // draft_model.cpp: DraftModel
void register_embedding(py::module_ & m);   // embedding.cpp: EmbeddingContext
void register_rerank(py::module_ & m);      // rerank.cpp: RerankContext
void register_vision(py::module_ & m);      // vision.cpp: Vision, VisionPrompt, submit_vision

// Text from the engine and the template worker as a Python str. Engine text is valid UTF-8 by
// construction (Utf8Stream) but a template or a corrupt file may emit other bytes: decoded with
// "replace", so odd bytes never raise here.
py::str to_py_str(const std::string & s);

// Content, reasoning and tool calls of generated text by a chat format's parser (tool_calls.h),
// parsed without the GIL (chat_prompt.cpp).
py::dict chat_output_to_dict(const ChatFormat & f, const std::string & text);

// A bound struct T built from keyword arguments, each naming a field (property) of T; an unknown
// name is a TypeError, so a misspelt field never goes unnoticed. Fields not given keep T's own
// initial values.
template <typename T> T from_kwargs(const char * type_name, const py::kwargs & fields) {
    py::object self = py::cast(T());
    for (const auto & [k, v] : fields) {
        const std::string key = py::str(k);
        if (!py::hasattr(self, key.c_str())) throw py::type_error(std::string(type_name) + " has no field '" + key + "'");
        py::setattr(self, k, v);
    }
    return self.cast<T>();
}

}  // namespace lmfast::bindings
