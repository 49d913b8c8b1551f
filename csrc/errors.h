// Exception types thrown by the core. bindings.cpp maps each one onto the class
// of the same name in lmfast.errors, so Python callers see one hierarchy.
#pragma once

#include <stdexcept>
#include <string>

namespace lmfast {

// A model file that is missing, unreadable, not GGUF, or rejected by llama.cpp.
struct ModelLoadError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A bad argument from the caller: token ids out of range, a prompt longer than the
// context, an invalid sampling value. Maps to a ValueError subclass.
struct InvalidArgument : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// A handle used after unload.
struct ModelUnloaded : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The chat template could not be rendered.
struct TemplateError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace lmfast
