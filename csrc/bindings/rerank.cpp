// RerankContext (rerank.h): lmfast.reranker's native half. The GIL is released while pairs are
// tokenized and encoded.
#include "bindings.h"

#include <pybind11/stl.h>

#include "rerank.h"

namespace lmfast::bindings {

void register_rerank(py::module_ & m) {
    py::class_<RerankContext, std::shared_ptr<RerankContext>>(m, "RerankContext")
        .def(py::init<std::shared_ptr<Model>, const EmbeddingParams &>(), py::arg("model"), py::arg("params"),
             py::call_guard<py::gil_scoped_release>())
        .def("score",
             [](RerankContext & self, const std::string & query, const std::vector<std::string> & documents) {
                 RerankScores res;
                 {
                     py::gil_scoped_release nogil;
                     res = self.score(query, documents);
                 }
                 return py::make_tuple(res.scores, res.n_tokens);
             },
             py::arg("query"), py::arg("documents"),
             "(scores, tokens): each document's relevance score, and the tokens of all pairs.")
        .def("pair_tokens", &RerankContext::pair_tokens, py::arg("query"), py::arg("document"),
             py::call_guard<py::gil_scoped_release>())
        .def("close", &RerankContext::close, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("n_ctx", &RerankContext::n_ctx)
        .def_property_readonly("n_batch", &RerankContext::n_batch)
        .def_property_readonly("n_seq_max", &RerankContext::n_seq_max)
        .def_property_readonly("n_threads", &RerankContext::n_threads)
        .def_property_readonly("decode_calls", &RerankContext::decode_calls)
        .def_property_readonly("model", &RerankContext::model);
}

}  // namespace lmfast::bindings
