#include "prefix_cache.h"

#include <algorithm>

namespace lmfast {

size_t common_prefix(const std::vector<llama_token> & a, const std::vector<llama_token> & b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i]) ++i;
    return i;
}

PrefixCache::PrefixCache(int32_t n_seq) : entries_(n_seq) {}

PrefixCache::Match PrefixCache::acquire(const std::vector<llama_token> & prompt) {
    Match best;
    uint64_t best_used = UINT64_MAX;
    for (size_t i = 0; i < entries_.size(); ++i) {
        const Entry & e = entries_[i];
        if (e.busy) continue;
        const size_t n = common_prefix(e.tokens, prompt);
        if (best.seq < 0 || n > best.n_common || (n == best.n_common && e.last_used < best_used)) {
            best.seq = static_cast<llama_seq_id>(i);
            best.n_common = n;
            best_used = e.last_used;
        }
    }
    if (best.seq >= 0) {
        entries_[best.seq].busy = true;
        entries_[best.seq].last_used = ++clock_;
    }
    return best;
}

void PrefixCache::release(llama_seq_id seq) {
    entries_[seq].busy = false;
    entries_[seq].last_used = ++clock_;
}

size_t PrefixCache::total_tokens() const {
    size_t n = 0;
    for (const auto & e : entries_) n += e.tokens.size();
    return n;
}

llama_seq_id PrefixCache::lru_idle_nonempty() const {
    llama_seq_id best = -1;
    uint64_t best_used = UINT64_MAX;
    for (size_t i = 0; i < entries_.size(); ++i) {
        const Entry & e = entries_[i];
        if (e.busy || e.tokens.empty()) continue;
        if (e.last_used < best_used) {
            best = static_cast<llama_seq_id>(i);
            best_used = e.last_used;
        }
    }
    return best;
}

}  // namespace lmfast
