// Speculative decoding without a draft model: n-gram lookup in the sequence's own tokens (the
// prompt and what was generated), with llama.cpp's n-gram cache (common/ngram-cache.h, what its
// `llama-lookup` program drafts with). A request that repeats text from its context (a rewrite,
// a quote, code being edited) gets several tokens verified by one target pass instead of one.
// How many it may draft each step is draft_length.h's choice.
//
// The cache counts, for every 1- to 4-gram of the sequence, the tokens that followed it. Each
// draft token is the most frequent follower of the longest n-gram ending the text so far (draft
// included) that passes llama.cpp's thresholds (a 3- or 4-gram: 1 sighting and half of them;
// a 2-gram: 2 and half; a 1-gram: 2 and two thirds), and the draft stops at the first position
// without one. Against copying the span after the last occurrence of a fixed 3-gram (llama.cpp's
// common_ngram_simple_draft, what this used before), a draft follows where the earlier text it
// copies went on differently, and stops where the history is unsure: on Gemma 3 270M Q4_K_M's
// copy-heavy prompts llama-lookup had 95% of its drafts accepted against that lookup's 80%.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "llama.h"
#include "ngram-cache.h"

namespace lmfast {

class NgramLookup {
public:
    // Up to k tokens to follow `next` (sampled, not yet in `history`); empty when the history
    // has no confident continuation. `history` is the sequence's tokens: between calls it only
    // grows at its end, except for a context shift, after which it is indexed again.
    std::vector<llama_token> draft(const std::vector<llama_token> & history, llama_token next, int32_t k);

private:
    void index(const std::vector<llama_token> & history);

    common_ngram_cache context_;
    common_ngram_cache none_;           // llama.cpp's dynamic and static caches: not kept here
    std::vector<llama_token> inp_;      // the history indexed so far
};

}  // namespace lmfast
