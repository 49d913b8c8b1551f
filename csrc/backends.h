// What ggml runs on: its registered backends and devices, the backend modules of a portable
// build, and whether large buffers go on huge pages. Read by lmfast.backend_info().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lmfast {

struct BackendInfo {
    std::string name;
    size_t n_devices = 0;
    std::vector<std::pair<std::string, std::string>> features;  // e.g. ("AVX2", "1")
    std::string library;  // the module file in a GGML_BACKEND_DL build, else the extension's
};

struct DeviceInfo {
    size_t index = 0;
    std::string name, description, type, backend;  // type: cpu, gpu, igpu, accel
    size_t memory_free = 0, memory_total = 0;
};

// A portable (GGML_BACKEND_DL) build: loads the backend modules installed beside this extension,
// the best CPU variant for this machine among them. Must run before llama_backend_init(), which
// would otherwise search only the Python executable's folder and the working directory.
// Does nothing in a build with the backends linked in.
void load_backend_modules();

std::vector<BackendInfo> list_backends();
std::vector<DeviceInfo> list_devices();

// Whether ggml's large buffers are advised onto transparent huge pages, and why not.
std::string hugepages_status();

// Matrix products computed by csrc/q4_1_gemm.cpp in this process so far, prompts and decode
// steps; -1 where this build cannot tell (the kernel is not linked into _core: portable builds,
// other systems).
int64_t q4_1_tiled_products();

// The same for Q8_0 products of 2 to 8 tokens (csrc/few_token_gemm.cpp), linked with the Q4_1 kernel.
int64_t few_token_products();

}  // namespace lmfast
