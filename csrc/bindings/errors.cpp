// C++ exceptions -> lmfast.errors classes (errors.h's types; anything else is an LMStudioRuntimeError).
#include "bindings.h"

#include <cstring>
#include <exception>
#include <new>

#include "errors.h"

namespace lmfast::bindings {

namespace {

[[noreturn]] void raise_as(const char * cls_name, const char * msg) {
    py::object cls = py::module_::import("lmfast.errors").attr(cls_name);
    // Messages may quote bytes from a corrupt file: decode leniently.
    PyObject * text = PyUnicode_DecodeUTF8(msg, static_cast<Py_ssize_t>(std::strlen(msg)), "replace");
    if (!text) throw py::error_already_set();
    PyErr_SetObject(cls.ptr(), text);
    Py_DECREF(text);
    throw py::error_already_set();
}

}  // namespace

void register_errors(py::module_ & m) {
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ModelLoadError & e) {
            raise_as("ModelLoadError", e.what());
        } catch (const InvalidArgument & e) {
            raise_as("LMStudioValueError", e.what());
        } catch (const ModelUnloaded & e) {
            raise_as("ModelUnloadedError", e.what());
        } catch (const TemplateError & e) {
            raise_as("TemplateError", e.what());
        } catch (const std::bad_alloc &) {
            raise_as("LMStudioRuntimeError", "out of memory");
        } catch (const py::error_already_set &) {
            throw;  // a Python exception on its way up (KeyboardInterrupt, ...)
        } catch (const py::builtin_exception &) {
            throw;  // pybind11's own, mapped by its translator (StopIteration, IndexError, ...)
        } catch (const std::exception & e) {
            // Anything else from llama.cpp or the standard library: still an lmfast error.
            raise_as("LMStudioRuntimeError", e.what());
        }
    });
}

}  // namespace lmfast::bindings
