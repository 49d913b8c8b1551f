// DraftModel (draft_model.h): a draft model's context beside a target's engine, handed to
// requests through GenerationParams.draft_model.
#include "bindings.h"

#include <pybind11/stl.h>

#include "draft_model.h"

namespace lmfast::bindings {

void register_draft_model(py::module_ & m) {
    py::class_<DraftModel, std::shared_ptr<DraftModel>>(m, "DraftModel",
        "A draft model for speculative decoding beside a target model's engine (n_ctx, n_seq: the engine's).")
        .def(py::init<std::shared_ptr<Model>, const Model &, int32_t, int32_t, int32_t>(), py::arg("draft"),
             py::arg("target"), py::arg("n_ctx"), py::arg("n_seq"), py::arg("n_threads"),
             py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("model", &DraftModel::model)
        .def("draft", &DraftModel::draft, py::arg("seq"), py::arg("history"), py::arg("next"), py::arg("n"),
             py::arg("n_vocab_target"), py::arg("p_min") = 0.0f, py::call_guard<py::gil_scoped_release>(),
             "Up to n greedy tokens after history + next in sequence seq (for tests; engines call it natively).");
}

}  // namespace lmfast::bindings
