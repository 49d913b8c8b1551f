// Speculative decoding without a draft model: n-gram lookup in the sequence's own tokens (the
// prompt and what was generated), llama.cpp's common_ngram_simple_draft. A request that repeats
// text from its context (a rewrite, a quote, code being edited) gets several tokens verified by
// one target pass instead of one.
//
// The draft length adapts per request, so that drafting costs little where it does not pay:
// it doubles (up to the request's maximum) after a fully accepted draft and halves after a
// draft of which nothing was accepted; at zero the request rests kRestSteps steps, then tries
// one token again. The engine decides where drafting fits in a step (Engine::build_batch).
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
    NgramDrafter(int32_t n_max, int32_t n_min);

    // A draft to follow `next` (sampled, not yet in `history`), at most `room` tokens; empty
    // when there is nothing worth verifying. `ignored` gets the tokens drafted but dropped
    // (shorter than n_min, or cut by room).
    std::vector<llama_token> draft(const std::vector<llama_token> & history, llama_token next, int32_t room,
                                   int32_t & ignored);
    // What verification made of the last draft.
    void verified(size_t n_drafted, size_t n_accepted);

    // The n-gram (with `next` as its last token) looked up in the history. 3 keeps chance
    // matches of common two-token pairs ("of the") from drafting.
    static constexpr uint16_t kNgram = 3;
    static constexpr int32_t kRestSteps = 16;

private:
    int32_t n_max_, n_min_;
    int32_t n_now_;      // the current draft length limit
    int32_t rest_ = 0;   // steps left without drafting
};

}  // namespace lmfast
