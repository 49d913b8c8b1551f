#include "spill_cache.h"

#include "prefix_cache.h"  // common_prefix

namespace lmfast {

void SpillCache::put(Entry e, std::vector<Entry> & pushed_out) {
    if (e.tokens.empty()) return;
    if (e.state.size() > budget_) {
        pushed_out.push_back(std::move(e));
        return;
    }
    const auto & tokens = e.tokens;
    for (auto it = entries_.begin(); it != entries_.end();) {
        const bool superseded = it->key == e.key && it->tokens.size() <= tokens.size() &&
                                common_prefix(it->tokens, tokens) == it->tokens.size();
        if (superseded) {
            bytes_ -= it->state.size();
            it = entries_.erase(it);
        } else {
            ++it;
        }
    }
    evict_to(budget_ - e.state.size(), pushed_out);
    bytes_ += e.state.size();
    entries_.push_front(std::move(e));
}

SpillCache::Iter SpillCache::best(const std::vector<llama_token> & prompt, const std::vector<float> & key,
                                  size_t & n_common) {
    n_common = 0;
    Iter found = entries_.end();
    for (Iter it = entries_.begin(); it != entries_.end(); ++it) {
        const size_t n = it->key == key ? common_prefix(it->tokens, prompt) : 0;
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

void SpillCache::evict_to(size_t limit, std::vector<Entry> & pushed_out) {
    while (bytes_ > limit && !entries_.empty()) {
        bytes_ -= entries_.back().state.size();
        pushed_out.push_back(std::move(entries_.back()));
        entries_.pop_back();
    }
}

}  // namespace lmfast
