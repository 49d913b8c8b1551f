// Process-wide functions: llama.cpp's log, threads, backends and devices, the link wraps, KV types.
#include "bindings.h"

#include <pybind11/stl.h>

#include "backends.h"
#include "common.h"
#include "engine.h"
#include "link_wraps.h"
#include "log_filter.h"

namespace lmfast::bindings {

namespace {

// Registered backends and their devices, as ggml sees them now (backends.h).
py::dict backends_now() {
    py::list regs;
    for (const BackendInfo & b : list_backends()) {
        py::dict feats;
        for (const auto & [name, value] : b.features) feats[name.c_str()] = value;
        py::dict r;
        r["name"] = b.name;
        r["n_devices"] = b.n_devices;
        r["features"] = feats;
        r["library"] = b.library;
        regs.append(r);
    }
    py::list devs;
    for (const DeviceInfo & d : list_devices()) {
        py::dict o;
        o["index"] = d.index;
        o["name"] = d.name;
        o["description"] = d.description;
        o["type"] = d.type;
        o["backend"] = d.backend;
        o["memory_free"] = d.memory_free;
        o["memory_total"] = d.memory_total;
        devs.append(o);
    }
    py::dict out;
    out["backends"] = regs;
    out["devices"] = devs;
    return out;
}

py::list link_wraps_now() {
    py::list out;
    for (const LinkWrap & w : link_wraps()) {
        out.append(py::dict(py::arg("name") = w.name, py::arg("symbol") = w.symbol, py::arg("file") = w.file,
                            py::arg("linked") = w.linked, py::arg("calls") = w.calls, py::arg("where") = w.where));
    }
    return out;
}

}  // namespace

void register_system(py::module_ & m) {
    m.def("set_log_level", &set_log_level,
          "Sets how much of llama.cpp's log reaches stderr: debug, info, warn, error or none.");
    m.def("system_info", [] { return std::string(llama_print_system_info()); });
    m.def("default_threads", [] { return common_cpu_get_num_math(); },
          "Threads lmfast decodes with by default (physical cores, as llama.cpp counts them).");
    m.def("supports_gpu_offload", [] { return llama_supports_gpu_offload(); });
    m.def("backends", &backends_now,
          "Registered ggml backends (name, features, module file) and devices (name, type, memory).");
    m.def("kv_cache_types", [] {
        py::dict d;
        for (const auto & [name, id] : kv_cache_types()) d[name.c_str()] = id;
        return d;
    }, "KV cache type names llama.cpp accepts -> ggml_type ids.");
    m.def("hugepages_status", &hugepages_status,
          "Whether large ggml buffers are advised onto transparent huge pages (csrc/hugepages.cpp), and why not.");
    m.def("link_wraps", &link_wraps_now,
          "Each -Wl,--wrap of a ggml symbol (csrc/link_wraps.h): whether it is linked, and its calls so far.");
    m.def("q4_1_tiled_products", &q4_1_tiled_products,
          "Q4_1 matrix products computed by lmfast's kernel so far (csrc/q4_1_gemm.cpp); -1 where unknown.");
    m.def("few_token_products", &few_token_products,
          "Q8_0 matrix products of 2 to 8 tokens computed by lmfast's kernel so far (csrc/few_token_gemm.cpp); "
          "-1 where unknown.");
    m.attr("version") = LMFAST_VERSION;
}

}  // namespace lmfast::bindings
