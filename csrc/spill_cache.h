// The host-memory tier of the KV cache. When the engine must reuse a sequence that holds
// another conversation, it saves that sequence's cells (llama_state_seq_get_data: only the
// sequence's own cells, not its whole stream) here, and restores them into a free sequence
// when the conversation returns, instead of evaluating its history again: ~10 ms for 1,000
// SmolLM2 tokens (23 KiB each, ~2 GB/s) against ~3 s to recompute them on 2 cores.
// Least recently used entries go first when the byte budget is full.
// Owned and used by the engine thread only: no locking here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <vector>

#include "llama.h"

namespace lmfast {

class SpillCache {
public:
    explicit SpillCache(size_t budget_bytes) : budget_(budget_bytes) {}

    struct Entry {
        std::vector<llama_token> tokens;  // what the saved cells hold
        std::vector<uint8_t> state;       // llama_state_seq_get_data of those cells
        std::vector<float> key;           // the LoRA setting they were computed under (prefix_cache.h)
    };

    // Keeps a conversation. Entries of its setting it extends (their tokens are a prefix of these) are
    // superseded and dropped; then the least recently used go to `pushed_out` until it fits
    // (the next tier, disk_cache.h, may take them). An entry larger than the whole budget goes
    // to `pushed_out` itself.
    void put(Entry e, std::vector<Entry> & pushed_out);

    // The entry of setting `key` that shares the longest prefix with `prompt`, with that length
    // in n_common; end() when none shares a token.
    using Iter = std::list<Entry>::iterator;
    Iter best(const std::vector<llama_token> & prompt, const std::vector<float> & key, size_t & n_common);
    Iter end() { return entries_.end(); }
    // Removes an entry (restored into a sequence, it is resident again) and returns it.
    Entry take(Iter it);

    size_t bytes() const { return bytes_; }
    size_t size() const { return entries_.size(); }
    size_t budget() const { return budget_; }

private:
    void evict_to(size_t limit, std::vector<Entry> & pushed_out);

    size_t budget_;
    size_t bytes_ = 0;
    std::list<Entry> entries_;  // most recently used first
};

}  // namespace lmfast
