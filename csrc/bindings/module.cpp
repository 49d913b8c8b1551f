// pybind11 module lmfast._core. Its bound families register themselves (bindings.h); this file
// only initialises llama.cpp and calls them, in dependency order.
#include "bindings.h"

#include "backends.h"
#include "llama.h"
#include "log_filter.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
    using namespace lmfast::bindings;
    register_params(m);  // before Engine, whose submit() takes them
    register_chat_prompt(m);
    m.doc() = "lmfast native core: llama.cpp model loading, engine, sampling";

    lmfast::install_log_filter();
    lmfast::load_backend_modules();  // before llama_backend_init (backends.h)
    llama_backend_init();

    register_errors(m);
    register_system(m);
    register_gguf(m);
    register_model(m);
    register_engine(m);
    register_draft_model(m);
    register_embedding(m);
    register_rerank(m);
    register_vision(m);
}
