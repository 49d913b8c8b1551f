#include "spill_cache.h"

#include "prefix_cache.h"  // common_prefix

namespace lmfast {

bool SpillCache::put(std::vector<llama_token> tokens, std::vector<uint8_t> state) {
    if (tokens.empty() || state.size() > budget_) return false;
    for (auto it = entries_.begin(); it != entries_.end();) {
        const bool superseded = it->tokens.size() <= tokens.size() && common_prefix(it->tokens, tokens) == it->tokens.size();
        if (superseded) {
            bytes_ -= it->state.size();
            it = entries_.erase(it);
        } else {
            ++it;
        }
    }
    evict_to(budget_ - state.size());
    bytes_ += state.size();
    entries_.push_front(Entry{std::move(tokens), std::move(state)});
    return true;
}

SpillCache::Iter SpillCache::best(const std::vector<llama_token> & prompt, size_t & n_common) {
    n_common = 0;
    Iter found = entries_.end();
    for (Iter it = entries_.begin(); it != entries_.end(); ++it) {
        const size_t n = common_prefix(it->tokens, prompt);
        if (n > n_common) {
            n_common = n;
            found = it;
        }
    }
    return found;
}

SpillCache::Entry SpillCache::take(Iter it) {
    Entry e = std::move(*it);
    bytes_ -= e.state.size();
    entries_.erase(it);
    return e;
}

void SpillCache::evict_to(size_t limit) {
    while (bytes_ > limit && !entries_.empty()) {
        bytes_ -= entries_.back().state.size();
        entries_.pop_back();
    }
}

}  // namespace lmfast
