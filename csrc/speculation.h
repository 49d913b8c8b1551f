// Speculative decoding without a draft model: n-gram lookup in the sequence's own tokens (the
// prompt and what was generated), llama.cpp's common_ngram_simple_draft. A request that repeats
// text from its context (a rewrite, a quote, code being edited) gets several tokens verified by
// one target pass instead of one.
//
// The draft length is chosen per step from what drafting has earned this request: with a
// per-token acceptance p (a decaying count of accepted and rejected draft tokens, a prior of
// one each) a draft of k tokens yields 1 + p + ... + p^k tokens for a step that costs 1 + k*r
// plain steps, r being one more token's share of a step (the engine measures it: ~0.17 for
// SmolLM2 on 2 cores, prompt tokens at ~2.5 ms against ~15 ms a decode step). The k with the
// best ratio is drafted, none when no k beats a plain step; a request that stopped drafting
// tries one token every kProbeSteps steps, so that text which starts repeating is noticed.
// Owned by the engine thread: no locking.
#pragma once

#include <cstdint>
#include <vector>

#include "llama.h"

namespace lmfast {

class NgramDrafter {
public:
    // n_max: most tokens a draft may have (speculativeDecodingNumDraftTokensExact);
    // n_min: shorter drafts are not used (speculativeDecodingMinDraftLengthToConsider).
    // backoff: each probe that fails doubles the steps to the next one (up to kMaxProbeSteps),
    // and an accepted one resets them; for a draft model, whose probe costs draft decodes too.
    NgramDrafter(int32_t n_max, int32_t n_min, bool backoff = false);

    // A draft to follow `next` (sampled, not yet in `history`), at most `room` tokens, when
    // drafting pays at `cost_ratio` (r above); empty otherwise. `ignored` gets the tokens
    // drafted but dropped (shorter than n_min, or cut by room).
    std::vector<llama_token> draft(const std::vector<llama_token> & history, llama_token next, int32_t room,
                                   double cost_ratio, int32_t & ignored);
    // The same policy for another token source (a draft model, draft_model.h): the length to
    // ask it for this step (0: none), then its tokens cut to that length, `room` and n_min.
    int32_t length(double cost_ratio);
    std::vector<llama_token> fit(std::vector<llama_token> d, int32_t k, int32_t room, int32_t & ignored);
    // What verification made of the last draft.
    void verified(size_t n_drafted, size_t n_accepted);
    // The draft length with the best expected tokens per unit of step time; 0 if none beats 1.
    int32_t best_length(double cost_ratio) const;

    // The n-gram (with `next` as its last token) looked up in the history. 3 keeps chance
    // matches of common two-token pairs ("of the") from drafting.
    static constexpr uint16_t kNgram = 3;
    static constexpr int32_t kProbeSteps = 16;
    static constexpr int32_t kMaxProbeSteps = 256;

private:
    int32_t n_max_, n_min_;
    double accepted_ = 1.0, rejected_ = 1.0;  // decaying counts (the prior: p = 0.5)
    int32_t idle_ = 0;                         // steps since the last draft
    bool backoff_ = false, probing_ = false;   // probing_: the last draft was a probe
    int32_t probe_steps_ = kProbeSteps;        // steps from a draft to the next probe
};

}  // namespace lmfast
