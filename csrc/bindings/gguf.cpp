// GGUF files checked and read without loading a model (gguf_check.h).
#include "bindings.h"

#include "gguf_check.h"

namespace lmfast::bindings {

namespace {

// A GGUF value as the Python type that holds it; arrays as (element type name, count).
py::object gguf_value(const GgufKv & kv) {
    switch (kv.kind()) {
        case GgufKv::Kind::Unsigned: return py::int_(kv.u);
        case GgufKv::Kind::Signed: return py::int_(kv.i);
        case GgufKv::Kind::Float: return py::float_(kv.f);
        case GgufKv::Kind::Bool: return py::bool_(kv.i != 0);
        case GgufKv::Kind::String: return to_py_str(kv.s);
        case GgufKv::Kind::Array: break;
    }
    return py::make_tuple(gguf_type_name(kv.array_type), kv.array_len);
}

py::dict summary_to_dict(const GgufSummary & g) {
    py::dict d;
    d["version"] = g.version;
    d["n_tensors"] = g.n_tensors;
    d["n_kv"] = g.n_kv;
    d["data_offset"] = g.data_offset;
    d["data_size"] = g.data_size;
    d["alignment"] = g.alignment;
    return d;
}

}  // namespace

void register_gguf(py::module_ & m) {
    m.def("validate_gguf", [](const std::string & path) { return summary_to_dict(validate_gguf_file(path)); },
          py::arg("path"),
          "Checks a GGUF file's structure as Model.load does before llama.cpp reads it; raises ModelLoadError.");
    m.def("gguf_metadata",
        [](const std::string & path) {
            std::vector<GgufKv> kvs;
            {
                py::gil_scoped_release nogil;
                validate_gguf_file(path, &kvs);
            }
            py::dict d;
            for (const GgufKv & kv : kvs) d[to_py_str(kv.key)] = gguf_value(kv);
            return d;
        },
        py::arg("path"),
        "Key/value metadata of a GGUF file after the same checks as validate_gguf (ModelLoadError on a bad "
        "file); arrays as (element type name, count).");
}

}  // namespace lmfast::bindings
