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
#include <vector>

namespace lmfast {

struct GgufSummary {
    uint32_t version = 0;
    uint64_t n_tensors = 0;
    uint64_t n_kv = 0;
    uint64_t data_offset = 0;  // start of the tensor data section
    uint64_t data_size = 0;    // bytes of tensor data described by the tensor infos
    uint32_t alignment = 32;
};

// One metadata entry, as the file stores it. Arrays are summarised (element type and
// count), not read: vocabularies and merges are what make a header large.
struct GgufKv {
    std::string key;
    uint32_t type = 0;        // gguf_type: 0..7 and 10..12 scalars, 8 string, 9 array
    int64_t i = 0;            // signed integers and bool
    uint64_t u = 0;           // unsigned integers
    double f = 0.0;           // float32 / float64
    std::string s;            // string (raw bytes from the file)
    uint32_t array_type = 0;  // arrays: element type and count
    uint64_t array_len = 0;

    // Which of the fields above holds the value.
    enum class Kind { Unsigned, Signed, Float, Bool, String, Array };
    Kind kind() const;
};

// "uint8" ... "float64" for a GGUF value type id (gguf.h's enum gguf_type), "invalid" otherwise.
const char * gguf_type_name(uint32_t type);

// Throws ModelLoadError on the first problem; returns a summary otherwise. With
// `metadata`, also collects every key/value pair, in file order.
GgufSummary validate_gguf_file(const std::string & path, std::vector<GgufKv> * metadata = nullptr);

}  // namespace lmfast
