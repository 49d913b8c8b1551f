#include "seq_state.h"

#include <cstring>

namespace lmfast {

namespace {

constexpr size_t kHeader = 8;  // uint32 magic, int32 source sequence id

uint32_t u32_at(const std::vector<uint8_t> & v, size_t at) {
    uint32_t x = 0;
    std::memcpy(&x, v.data() + at, sizeof x);
    return x;
}

void put_u32(std::vector<uint8_t> & v, uint32_t x) {
    const auto * p = reinterpret_cast<const uint8_t *>(&x);
    v.insert(v.end(), p, p + sizeof x);
}

}  // namespace

uint32_t seq_state_streams(const std::vector<uint8_t> & state) {
    return state.size() < kHeader + 4 ? 0 : u32_at(state, kHeader);
}

bool restream_seq_state(const std::vector<uint8_t> & in, uint32_t n_streams, std::vector<uint8_t> & out) {
    const uint32_t n_old = seq_state_streams(in);
    if (n_old == 0 || n_streams == 0) return false;
    // Leading empty entries, then the one with cells (running to where the trailing empty
    // entries begin), then the trailing ones.
    size_t at = kHeader + 4;
    uint32_t lead = 0;
    while (lead < n_old && at + 4 <= in.size() && u32_at(in, at) == 0) {
        at += 4;
        ++lead;
    }
    out.assign(in.begin(), in.begin() + kHeader);
    put_u32(out, n_streams);
    if (lead == n_old) {  // no cells at all
        if (at != in.size()) return false;
        for (uint32_t s = 0; s < n_streams; ++s) put_u32(out, 0);
        return true;
    }
    const size_t trailing = 4ull * (n_old - lead - 1);
    if (at + 4 + trailing > in.size()) return false;
    const size_t end = in.size() - trailing;
    for (size_t t = end; t < in.size(); t += 4) {
        if (u32_at(in, t) != 0) return false;
    }
    out.insert(out.end(), in.begin() + static_cast<std::ptrdiff_t>(at), in.begin() + static_cast<std::ptrdiff_t>(end));
    for (uint32_t s = 1; s < n_streams; ++s) put_u32(out, 0);
    return true;
}

}  // namespace lmfast
