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

// What an entry offers a prompt of setting `key`: nothing when its cells were computed under
// another setting.
static size_t usable(const std::vector<llama_token> & tokens, size_t n_exact, const AdapterKey & held,
                     const std::vector<llama_token> & prompt, const AdapterKey & key) {
    return held == key ? std::min(common_prefix(tokens, prompt), n_exact) : 0;
}

size_t PrefixCache::longest_cached(const std::vector<llama_token> & prompt, const AdapterKey & key) const {
    size_t best = 0;
    for (const Entry & e : entries_) best = std::max(best, usable(e.tokens, e.n_exact, e.key, prompt, key));
    return best;
}

PrefixCache::Match PrefixCache::pick(const std::vector<llama_token> & prompt, const AdapterKey & key,
                                     bool & branch) const {
    Match m;
    for (size_t i = 0; i < entries_.size(); ++i) {
        const Entry & e = entries_[i];
        const size_t n = usable(e.tokens, e.n_exact, e.key, prompt, key);
        bool better = m.seq < 0 || n > m.n_common;
        if (!better && n == m.n_common) {
            const Entry & b = entries_[m.seq];
            // On a tie an idle sequence beats a busy one (no copy needed), then the newest.
            better = e.busy != b.busy ? !e.busy : e.last_used > b.last_used;
        }
        if (better) {
            m.seq = static_cast<llama_seq_id>(i);
            m.n_common = n;
        }
    }
    branch = false;
    if (m.seq < 0) return m;
    if (m.n_common == 0) {
        m.seq = spare(-1);
    } else {
        // An idle match with a tail worth keeping (another conversation's, or an earlier
        // question's) is kept by branching into a spare sequence, which loses what that one
        // holds. Keep whichever loses fewer cached tokens; an empty spare loses nothing. With a
        // full cache, clients asking new questions under one system prompt each lose only the
        // previous question's tail in place, where branching displaced another client's whole
        // conversation: 16 clients on 16 streams then kept 26-27 tokens of 41 where 33 were
        // cached (llama-server, too, reuses the slot with the longest common prefix in place).
        const Entry & e = entries_[m.seq];
        const size_t tail = e.tokens.size() - std::min(e.tokens.size(), m.n_common);
        if (e.busy) {
            branch = true;
        } else if (tail >= kKeepTail) {
            const llama_seq_id other = spare(m.seq);
            branch = other < 0 || tail > entries_[other].tokens.size();
        }
    }
    return m;
}

bool PrefixCache::would_displace(const std::vector<llama_token> & prompt, const AdapterKey & key) const {
    bool branch = false;
    const Match m = pick(prompt, key, branch);
    if (m.seq >= 0 && m.n_common > 0 && !branch &&
        entries_[m.seq].tokens.size() < m.n_common + kKeepTail) {
        return false;  // it continues its own conversation
    }
    for (const Entry & e : entries_) {
        if (!e.busy && e.tokens.empty()) return false;
    }
    return true;
}

// The idle sequence to give a request that brings no cached prefix of its own, other than
// `except`; -1 if none. First one next to a busy sequence: llama.cpp decodes a run of
// consecutive sequence ids in one pass over the weights and each gap costs another pass, for
// as long as both requests run. Then an empty one, then the least recently used.
llama_seq_id PrefixCache::spare(llama_seq_id except) const {
    const size_t n = entries_.size();
    auto adjacent = [&](size_t i) { return (i > 0 && entries_[i - 1].busy) || (i + 1 < n && entries_[i + 1].busy); };
    llama_seq_id pick = -1;
    for (size_t i = 0; i < n; ++i) {
        const Entry & e = entries_[i];
        if (e.busy || static_cast<llama_seq_id>(i) == except) continue;
        if (pick < 0) {
            pick = static_cast<llama_seq_id>(i);
            continue;
        }
        const Entry & p = entries_[pick];
        const bool better = adjacent(i) != adjacent(pick)               ? adjacent(i)
                            : e.tokens.empty() != p.tokens.empty() ? e.tokens.empty()
                                                                   : e.last_used < p.last_used;
        if (better) pick = static_cast<llama_seq_id>(i);
    }
    return pick;
}

void PrefixCache::take(Match & m) {
    entries_[m.seq].busy = true;
    entries_[m.seq].last_used = ++clock_;
}

void PrefixCache::release(llama_seq_id seq) {
    entries_[seq].busy = false;
    entries_[seq].n_exact = SIZE_MAX;
    entries_[seq].last_used = ++clock_;
}

}  // namespace lmfast
