// Speculative decoding without a draft model: n-gram lookup in the sequence's own tokens (the
// prompt and what was generated), llama.cpp's common_ngram_simple_draft. A request that repeats
// text from its context (a rewrite, a quote, code being edited) gets several tokens verified by
// one target pass instead of one. How many it drafts each step is draft_length.h's choice.
#pragma once

#include <cstdint>
#include <vector>

#include "llama.h"

namespace lmfast {

// The n-gram (with `next` as its last token) looked up in the history. 3 keeps chance matches
// of common two-token pairs ("of the") from drafting.
constexpr uint16_t kDraftNgram = 3;

// Up to k tokens to follow `next` (sampled, not yet in `history`), where its last kDraftNgram
// tokens occurred before; empty otherwise.
std::vector<llama_token> ngram_draft(const std::vector<llama_token> & history, llama_token next, int32_t k);

}  // namespace lmfast
