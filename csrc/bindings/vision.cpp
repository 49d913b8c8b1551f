// Vision projectors and image prompts (vision.h): load, tokenize a rendered chat with images, and
// queue it on an engine. Decoding images and loading run without the GIL.
#include "bindings.h"

#include <pybind11/stl.h>

#include "engine.h"
#include "model.h"
#include "vision.h"

namespace lmfast::bindings {

void register_vision(py::module_ & m) {
    m.def("validate_projector", &validate_projector_file, py::arg("path"), py::call_guard<py::gil_scoped_release>(),
          "Checks a vision projector's header; raises ModelLoadError naming the problem.");
    py::class_<VisionPrompt, std::shared_ptr<VisionPrompt>>(m, "VisionPrompt")
        .def_property_readonly("tokens", [](const VisionPrompt & p) { return p.tokens; },
                               "Text tokens, and each image's placeholders (a hash of its pixels).")
        .def_property_readonly("n_tokens", [](const VisionPrompt & p) { return p.tokens.size(); })
        .def_property_readonly("n_image_tokens", [](const VisionPrompt & p) { return p.n_image_tokens; })
        .def_property_readonly("n_chunks", [](const VisionPrompt & p) { return p.spans.size(); });
    py::class_<Vision, std::shared_ptr<Vision>>(m, "Vision")
        .def(py::init<std::shared_ptr<Model>, const std::string &, int32_t, int32_t>(), py::arg("model"),
             py::arg("path"), py::arg("n_threads") = 1, py::arg("flash_attn") = -1,
             py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("path", &Vision::path)
        .def_property_readonly("images", &Vision::images, "The projector reads images.")
        .def_property_readonly("audio", &Vision::audio, "The projector reads audio clips (WAV, MP3, FLAC).")
        .def_property_readonly_static("marker", [](py::object) { return std::string(Vision::marker()); })
        .def(
            "prompt",
            [](std::shared_ptr<Vision> self, const std::string & text, const std::vector<py::bytes> & images) {
                std::vector<std::string> raw(images.begin(), images.end());
                py::gil_scoped_release nogil;
                return std::const_pointer_cast<VisionPrompt>(VisionPrompt::make(self, text, raw));
            },
            py::arg("text"), py::arg("images"),
            "A rendered chat (one marker per image) and the images' file bytes, tokenized by libmtmd.");
    m.def(
        "submit_vision",
        [](Engine & engine, std::shared_ptr<VisionPrompt> prompt, GenerationParams params, bool stream) {
            return engine.submit_vision(std::move(prompt), std::move(params), stream);
        },
        py::arg("engine"), py::arg("prompt"), py::arg("params"), py::kw_only(), py::arg("stream") = false,
        py::call_guard<py::gil_scoped_release>(), "Queues a prompt with images (Engine::submit_vision).");
}

}  // namespace lmfast::bindings
