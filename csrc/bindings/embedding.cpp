// EmbeddingContext (embedding.h): lmfast.embedding's native half. The GIL is released while texts
// are tokenized and encoded; the vectors become Python lists after.
#include "bindings.h"

#include <pybind11/stl.h>

#include "embedding.h"

namespace lmfast::bindings {

void register_embedding(py::module_ & m) {
    py::class_<EmbeddingContext, std::shared_ptr<EmbeddingContext>>(m, "EmbeddingContext")
        .def(py::init<std::shared_ptr<Model>, const EmbeddingParams &>(), py::arg("model"), py::arg("params"),
             py::call_guard<py::gil_scoped_release>())
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

}  // namespace lmfast::bindings
