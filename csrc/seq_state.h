// llama.cpp's sequence-state format (llama_state_seq_get_data) for a plain KV cache, moved to a
// context with another number of KV streams. The data is a magic number and the source
// sequence id, then the cache's stream count and, per stream, a cell count followed by that
// stream's cells. A sequence's state has cells in one stream only; llama_state_seq_set_data
// puts them into the destination sequence's stream whichever entry holds them, but refuses a
// stream count other than its context's. So growing the context (engine.cpp grow()) and
// restoring a conversation saved before a growth (spill_cache.h) rewrite the count and the
// empty entries around the one that holds cells. Only for a plain KV cache: recurrent,
// hybrid and sliding-window memories write other sections, and their engines never grow.
#pragma once

#include <cstdint>
#include <vector>

namespace lmfast {

// The state `in` as a context with n_streams streams reads it; false when `in` is not one
// sequence's state of a plain KV cache (out is then unspecified).
bool restream_seq_state(const std::vector<uint8_t> & in, uint32_t n_streams, std::vector<uint8_t> & out);

// The stream count written in a sequence state, 0 when it is too short to hold one.
uint32_t seq_state_streams(const std::vector<uint8_t> & state);

}  // namespace lmfast
