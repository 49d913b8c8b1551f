// How many tokens a speculating request drafts each step, for either source of drafts (the
// n-gram lookup, speculation.h, or a draft model, draft_model.h), learnt per request from what
// verification made of its drafts.
//
// With a per-token acceptance p (a decaying count of accepted and rejected draft tokens, a prior
// of one each) a draft of k tokens yields 1 + p + ... + p^k tokens for a step that costs cost(k)
// plain steps: what the engine measured for a batch of that size (StepCost below), plus a draft
// model's own decode time. The k with the best ratio is drafted, none when no k beats a plain step;
// a request that stopped drafting tries one token every kProbeSteps steps, so that text which
// starts repeating is noticed. Owned by the engine thread: no locking. Model-free: the native
// unit tests drive it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "llama.h"

namespace lmfast {

class DraftLength {
public:
    // n_max: most tokens a draft may have (speculativeDecodingNumDraftTokensExact);
    // n_min: shorter drafts are not used (speculativeDecodingMinDraftLengthToConsider).
    // backoff: each probe that fails doubles the steps to the next one (up to kMaxProbeSteps),
    // and an accepted one resets them; for a draft model, whose probe costs draft decodes too.
    // prior_accepted: the acceptance count a request starts with, beside one rejection. The
    // n-gram lookup drafts only what its history backs (llama-lookup: 95% accepted), and at the
    // measured prices a first guess of p = 0.5 drafted nothing on Gemma 3 270M Q4_K_M (a second
    // token costs ~0.7 of a step there: llama-bench pp1 23 ms, pp2 40 ms): it starts from 3
    // (p = 0.75).
    DraftLength(int32_t n_max, int32_t n_min, bool backoff = false, double prior_accepted = 1.0);

    // What a step with k draft tokens costs, as a share of the same step without them. The
    // engine gives its measured step times by batch size (engine.cpp, step_cost): they are not
    // linear in k. SmolLM2 on 2 cores: 11.5 ms for 1 token, 24.4 for 2, 33.4 for 3, 39.0 for 4,
    // 47.2 for 5. On Gemma 3 270M Q4_K_M's copy-heavy prompts the drafts of up to 8 that a
    // linear price (a prompt token's share, ~0.17) chose ran at 1.21x plain; priced by the
    // measured times, 1.36x.
    using StepCost = std::function<double(int32_t k)>;

    // The length to draft this step, counting the step. `rows`: the batch's tokens before the
    // draft (this request's next one included), each worth a token: the gain of k drafts is
    // (rows - 1 + 1 + p + ... + p^k) / (rows * cost(k)).
    int32_t length(const StepCost & cost, int32_t rows = 1);
    // The same at a linear price: one more token costs `cost_ratio` of a step (r above).
    int32_t length(double cost_ratio) { return length(linear(cost_ratio)); }
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
    int32_t best_length(const StepCost & cost, int32_t rows = 1) const;
    int32_t best_length(double cost_ratio) const { return best_length(linear(cost_ratio)); }
    static StepCost linear(double cost_ratio) {
        return [cost_ratio](int32_t k) { return 1.0 + k * cost_ratio; };
    }

    static constexpr int32_t kProbeSteps = 16;
    static constexpr int32_t kMaxProbeSteps = 256;
    static constexpr int32_t kMaxQuietSteps = 16;

private:
    int32_t n_max_, n_min_;
    double accepted_, rejected_ = 1.0;          // decaying counts (the prior: p = 0.5 by default)
    int32_t idle_ = 0;                           // steps since the last draft
    bool backoff_ = false, probing_ = false;     // probing_: the last draft was a probe
    int32_t probe_steps_ = kProbeSteps;          // steps from a draft to the next probe
    int32_t quiet_steps_ = 0, quiet_left_ = 0;   // drafted_nothing()'s wait, and what is left of it
};

}  // namespace lmfast
