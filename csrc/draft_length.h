// How many tokens a speculating request drafts each step, for either source of drafts (the
// n-gram lookup, speculation.h, or a draft model, draft_model.h), learnt per request from what
// verification made of its drafts.
//
// With a per-token acceptance p (a decaying count of accepted and rejected draft tokens, a prior
// of one each) a draft of k tokens yields 1 + p + ... + p^k tokens for a step that costs 1 + k*r
// plain steps, r being one more token's share of a step (the engine measures it: ~0.17 for
// SmolLM2 on 2 cores, prompt tokens at ~2.5 ms against ~15 ms a decode step; a draft model adds
// its own decode time). The k with the best ratio is drafted, none when no k beats a plain step;
// a request that stopped drafting tries one token every kProbeSteps steps, so that text which
// starts repeating is noticed. Owned by the engine thread: no locking. Model-free: the native
// unit tests drive it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "llama.h"

namespace lmfast {

class DraftLength {
public:
    // n_max: most tokens a draft may have (speculativeDecodingNumDraftTokensExact);
    // n_min: shorter drafts are not used (speculativeDecodingMinDraftLengthToConsider).
    // backoff: each probe that fails doubles the steps to the next one (up to kMaxProbeSteps),
    // and an accepted one resets them; for a draft model, whose probe costs draft decodes too.
    DraftLength(int32_t n_max, int32_t n_min, bool backoff = false);

    // The length to draft this step at `cost_ratio` (r above; 0: none), counting the step.
    int32_t length(double cost_ratio);
    // The draft cut to length k, to `room` and to n_min; `ignored` gets the tokens dropped.
    std::vector<llama_token> fit(std::vector<llama_token> d, int32_t k, int32_t room, int32_t & ignored);
    // What verification made of the last draft.
    void verified(size_t n_drafted, size_t n_accepted);
    // A draft model asked for tokens gave none (unsure of its first: p_min): its decode bought
    // nothing, and verified() learns nothing from an empty draft. The next asks wait 1, 2, 4 ...
    // up to kMaxQuietSteps steps; a draft with tokens ends the wait. Without it a draft that is
    // always unsure (a random-weight one at p_min 0.75) was asked every step: x0.93 of plain
    // decoding in `python -m benchmarks draft-model --quick`.
    void drafted_nothing();
    // The draft length with the best expected tokens per unit of step time; 0 if none beats 1.
    int32_t best_length(double cost_ratio) const;

    static constexpr int32_t kProbeSteps = 16;
    static constexpr int32_t kMaxProbeSteps = 256;
    static constexpr int32_t kMaxQuietSteps = 16;

private:
    int32_t n_max_, n_min_;
    double accepted_ = 1.0, rejected_ = 1.0;    // decaying counts (the prior: p = 0.5)
    int32_t idle_ = 0;                           // steps since the last draft
    bool backoff_ = false, probing_ = false;     // probing_: the last draft was a probe
    int32_t probe_steps_ = kProbeSteps;          // steps from a draft to the next probe
    int32_t quiet_steps_ = 0, quiet_left_ = 0;   // drafted_nothing()'s wait, and what is left of it
};

}  // namespace lmfast
