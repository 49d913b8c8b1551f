// Where lmfast changes llama.cpp's behaviour through the link (-Wl,--wrap of a ggml symbol,
// CMakeLists.txt), and whether each such wrap is in this build and taken. Read by
// lmfast.backend_info()["link_wraps"]; tests/test_link_wraps.py fails when a llama.cpp bump
// leaves a linked wrap uncalled.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lmfast {

struct LinkWrap {
    std::string name;     // lazy_clear, hugepages, q4_1_gemm
    std::string symbol;   // the wrapped symbol
    std::string file;     // the wrap's source file
    bool linked = false;  // its code is in a binary of this process
    int64_t calls = -1;   // calls through the wrap so far; -1 where not linked
    std::string where;    // the binary that holds it, or why it is not linked
};

std::vector<LinkWrap> link_wraps();

}  // namespace lmfast
