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
    llama_seq_id best = -1;
    size_t best_n = 0;
    for (size_t i = 0; i < entries_.size(); ++i) {
        const Entry & e = entries_[i];
        if (e.busy) continue;
        const size_t n = common_prefix(e.tokens, prompt);
        if (best < 0 || n > best_n || (n == best_n && e.last_used > entries_[best].last_used)) {
            best = static_cast<llama_seq_id>(i);
            best_n = n;
        }
    }
    if (best < 0) return {};

    // A fresh sequence for the request: an empty one if there is one, else the least
    // recently used idle one other than `except`.
    auto spare = [&](llama_seq_id except) {
        llama_seq_id pick = -1;
        for (size_t i = 0; i < entries_.size(); ++i) {
            const Entry & e = entries_[i];
            if (e.busy || static_cast<llama_seq_id>(i) == except) continue;
            if (pick < 0) { pick = static_cast<llama_seq_id>(i); continue; }
            const Entry & p = entries_[pick];
            if (e.tokens.empty() != p.tokens.empty() ? e.tokens.empty() : e.last_used < p.last_used) {
                pick = static_cast<llama_seq_id>(i);
            }
        }
        return pick;
    };

    Match m;
    if (best_n == 0) {
        m.seq = spare(-1);
    } else if (entries_[best].tokens.size() <= best_n) {
        m.seq = best;  // the same conversation, continued
        m.n_common = best_n;
    } else {
        m.n_common = best_n;
        m.seq = spare(best);
        if (m.seq >= 0) {
            m.copy_from = best;
            entries_[best].last_used = ++clock_;
        } else {
            m.seq = best;  // no other sequence is free: branch off in place
        }
    }
    entries_[m.seq].busy = true;
    entries_[m.seq].last_used = ++clock_;
    return m;
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
