// Conversions the binding files share (bindings.h).
#include "bindings.h"

namespace lmfast::bindings {

py::str to_py_str(const std::string & s) {
    PyObject * o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

}  // namespace lmfast::bindings
