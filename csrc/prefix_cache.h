// Bookkeeping of what each KV-cache sequence holds, so that a new request can
// start from the sequence that shares the longest prefix with its prompt.
// Cells are keyed by the LoRA setting they were computed under (lora.h: one scale per adapter;
// empty without adapters) as well as by tokens: a sequence shares no prefix with a prompt of
// another setting, so a conversation cached under one adapter is never reused under another.
// Owned and used by the engine thread only: no locking here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "llama.h"

namespace lmfast {

size_t common_prefix(const std::vector<llama_token> & a, const std::vector<llama_token> & b);

using AdapterKey = std::vector<float>;  // a LoRA setting (lora.h)

class PrefixCache {
public:
    explicit PrefixCache(int32_t n_seq);

    struct Match {
        llama_seq_id seq = -1;        // the sequence the request will use
        llama_seq_id copy_from = -1;  // >= 0: first copy the shared prefix from this sequence
        size_t n_common = 0;          // prompt tokens already cached (in seq, or in copy_from)
    };
    // Picks the sequence that shares the longest prefix with `prompt`; a busy one (another
    // request is running on it, e.g. chats sharing a system prompt asking at once) only as
    // a source to copy from. When the chosen sequence is busy or holds a substantial tail beyond the shared prefix (another conversation
    // branching off, e.g. one that shares only the system prompt), it is kept intact:
    // the request gets an empty or the least recently used other sequence, and the
    // prefix is copied into it if `copy_pays(src, n_common)` says copying is cheaper than
    // evaluating those tokens again (otherwise they are evaluated: n_common = 0).
    // A short tail (a previous answer's last tokens) is simply cut off.
    // seq == -1 when all sequences are busy.
    // Only sequences computed under `key` share a prefix with the prompt.
    template <typename CopyPays>
    Match acquire(const std::vector<llama_token> & prompt, const AdapterKey & key, CopyPays && copy_pays);

    static constexpr size_t kKeepTail = 16;  // tokens beyond the shared prefix worth keeping
    // Whether acquire(prompt) would now give the request a sequence that holds another
    // conversation: no idle sequence continues this one and no sequence is empty.
    bool would_displace(const std::vector<llama_token> & prompt, const AdapterKey & key) const;
    void grow(int32_t n_seq) { entries_.resize(static_cast<size_t>(n_seq)); }  // new sequences are empty
    void release(llama_seq_id seq);  // idle again; its tokens stay cached
    // A busy sequence's cells from n on are not what evaluating its tokens from scratch
    // gives (after a context shift): never copy them. Lifted at release, when the engine
    // has cut them off.
    void limit_exact(llama_seq_id seq, size_t n) { entries_[seq].n_exact = n; }

    // The longest prefix of `prompt` that some sequence holds (exactly), busy or not.
    size_t longest_cached(const std::vector<llama_token> & prompt, const AdapterKey & key) const;

    std::vector<llama_token> & tokens(llama_seq_id seq) { return entries_[seq].tokens; }
    // The setting a sequence's cells were computed under; the engine sets it when a request
    // takes the sequence (after saving what it held) and when cells are copied into it.
    const AdapterKey & key(llama_seq_id seq) const { return entries_[seq].key; }
    void set_key(llama_seq_id seq, const AdapterKey & key) { entries_[seq].key = key; }
    int32_t n_seq() const { return static_cast<int32_t>(entries_.size()); }

private:
    Match pick(const std::vector<llama_token> & prompt, const AdapterKey & key, bool & branch) const;
    llama_seq_id spare(llama_seq_id except) const;
    void take(Match & m);

    struct Entry {
        std::vector<llama_token> tokens;  // exactly what the KV cache holds for this sequence
        AdapterKey key;                   // the LoRA setting its cells were computed under
        uint64_t last_used = 0;
        size_t n_exact = SIZE_MAX;  // see limit_exact
        bool busy = false;
    };
    std::vector<Entry> entries_;
    uint64_t clock_ = 0;
};

template <typename CopyPays>
PrefixCache::Match PrefixCache::acquire(const std::vector<llama_token> & prompt, const AdapterKey & key,
                                        CopyPays && copy_pays) {
    bool branch = false;
    Match m = pick(prompt, key, branch);
    if (branch) {
        // m.seq is the matching sequence (idle, or busy: another request is using it);
        // keep it, and start from a spare one.
        const llama_seq_id other = spare(m.seq);
        if (other < 0 && entries_[m.seq].busy) {  // no idle sequence: not reached by the engine
            m = Match{};
            return m;
        }
        if (other >= 0) {
            if (copy_pays(m.seq, m.n_common)) {
                m.copy_from = m.seq;
            } else {
                m.n_common = 0;
            }
            entries_[m.seq].last_used = ++clock_;
            m.seq = other;
        }
    }
    if (m.seq >= 0) take(m);
    return m;
}

}  // namespace lmfast
