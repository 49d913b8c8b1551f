#include "backends.h"

#include <dlfcn.h>

#include "ggml-backend.h"

#ifdef LMFAST_HUGEPAGES_BUILT
extern "C" const char * lmfast_hugepages_status();  // csrc/hugepages.cpp (in _core or libggml-base)
#endif
#ifdef LMFAST_Q4_1_TILES_LINKED
extern "C" uint64_t lmfast_q4_1_tiled_products();  // csrc/q4_1_gemm.cpp (in _core)
extern "C" uint64_t lmfast_few_token_products();  // csrc/few_token_gemm.cpp (in _core)
#endif

namespace lmfast {

namespace {

// The shared object that holds a function (a backend module's file), or "".
std::string object_file_of(const void * fn) {
    Dl_info info{};
    if (!fn || dladdr(fn, &info) == 0 || !info.dli_fname) return std::string();
    return info.dli_fname;
}

// The folder this extension module was loaded from ("" if unknown).
[[maybe_unused]] std::string module_dir() {
    const std::string path = object_file_of(reinterpret_cast<const void *>(&load_backend_modules));
    if (path.empty()) return path;
    const size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

const char * dev_type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: return "unknown";
    }
}

}  // namespace

void load_backend_modules() {
#ifdef GGML_BACKEND_DL
    const std::string dir = module_dir();
    ggml_backend_load_all_from_path(dir.empty() ? nullptr : dir.c_str());
#endif
}

std::vector<BackendInfo> list_backends() {
    std::vector<BackendInfo> out;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        ggml_backend_reg_t reg = ggml_backend_reg_get(i);
        BackendInfo b;
        b.name = ggml_backend_reg_name(reg);
        b.n_devices = ggml_backend_reg_dev_count(reg);
        auto get_features = reinterpret_cast<ggml_backend_get_features_t>(
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"));
        if (get_features) {
            for (ggml_backend_feature * f = get_features(reg); f && f->name; ++f) {
                b.features.emplace_back(f->name, f->value ? f->value : "");
            }
        }
        b.library = object_file_of(reinterpret_cast<const void *>(get_features));
        out.push_back(std::move(b));
    }
    return out;
}

std::vector<DeviceInfo> list_devices() {
    std::vector<DeviceInfo> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        DeviceInfo d;
        d.index = i;
        d.name = ggml_backend_dev_name(dev);
        d.description = ggml_backend_dev_description(dev);
        d.type = dev_type_name(ggml_backend_dev_type(dev));
        d.backend = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
        ggml_backend_dev_memory(dev, &d.memory_free, &d.memory_total);
        out.push_back(std::move(d));
    }
    return out;
}

std::string hugepages_status() {
#ifdef LMFAST_HUGEPAGES_BUILT
    return lmfast_hugepages_status();
#else
    return "off (not built: Linux only, -DLMFAST_HUGEPAGES=ON)";
#endif
}

int64_t q4_1_tiled_products() {
#ifdef LMFAST_Q4_1_TILES_LINKED
    return int64_t(lmfast_q4_1_tiled_products());
#else
    return -1;
#endif
}

int64_t few_token_products() {
#ifdef LMFAST_Q4_1_TILES_LINKED
    return int64_t(lmfast_few_token_products());
#else
    return -1;
#endif
}

}  // namespace lmfast
