// Structural validation of a GGUF file before llama.cpp sees it.
//
// llama.cpp's own GGUF reader rejects most malformed headers, but parts of the
// loader behind it assert (abort the process) or index arrays with counts taken
// from the file. lmfast runs inside its users' processes, so every model file is
// checked here first: the whole header is read with bounded reads (no allocation
// sized by a count from the file before that count is checked against the bytes
// left), and the first problem found raises ModelLoadError naming the field and
// its byte offset.
#pragma once

#include <cstdint>
#include <string>

namespace lmfast {

struct GgufSummary {
    uint32_t version = 0;
    uint64_t n_tensors = 0;
    uint64_t n_kv = 0;
    uint64_t data_offset = 0;  // start of the tensor data section
    uint64_t data_size = 0;    // bytes of tensor data described by the tensor infos
    uint32_t alignment = 32;
};

// Throws ModelLoadError on the first problem; returns a summary otherwise.
GgufSummary validate_gguf_file(const std::string & path);

}  // namespace lmfast
