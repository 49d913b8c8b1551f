// EmbeddingContext (embedding.h): lmfast.embedding's native half. The GIL is released while texts
// are tokenized and encoded; the vectors become Python lists after.
#include "bindings.h"

#include <pybind11/stl.h>

#include "embedding.h"

namespace lmfast::bindings {

void register_embedding(py::module_ & m) {
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

}  // namespace lmfast::bindings
