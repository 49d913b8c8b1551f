// Builds a llama_sampler chain from a prediction config.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace lmfast {

struct SamplingParams {
    float temperature = 0.8f;     // <= 0: greedy
    int32_t top_k = 40;           // <= 0: off
    float top_p = 0.95f;          // >= 1: off
    float min_p = 0.05f;          // <= 0: off
    float repeat_penalty = 1.1f;  // 1: off
    int32_t repeat_last_n = 64;
    float frequency_penalty = 0.0f;
    float presence_penalty = 0.0f;
    uint32_t seed = LLAMA_DEFAULT_SEED;  // LLAMA_DEFAULT_SEED: a random seed per request
    std::string grammar;          // GBNF; empty: unconstrained
    // Lazy grammar (tool calls): unconstrained until the text matches one of the patterns
    // (std::regex, matched against the text generated so far) or one of the tokens is drawn,
    // then constrained from the start of the match on.
    bool grammar_lazy = false;
    std::vector<std::string> grammar_trigger_patterns;
    std::vector<llama_token> grammar_trigger_tokens;
    // Tokens the grammar accepts before the first sampled one: the template's generation prompt,
    // which a tool-call grammar of llama.cpp's starts with although it is already in the prompt.
    std::vector<llama_token> grammar_prefill;
};

// A seed as callers give it (Python, the HTTP APIs): any negative value asks for a random seed per
// request, which llama.cpp spells LLAMA_DEFAULT_SEED; requested_seed is the way back.
inline uint32_t sampling_seed(int64_t requested) {
    return requested < 0 ? LLAMA_DEFAULT_SEED : static_cast<uint32_t>(requested);
}
inline int64_t requested_seed(uint32_t seed) { return seed == LLAMA_DEFAULT_SEED ? -1 : static_cast<int64_t>(seed); }

struct SamplerDeleter {
    void operator()(llama_sampler * s) const { llama_sampler_free(s); }
};
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;

// Throws InvalidArgument for out-of-range values or a grammar that does not parse.
void validate(const SamplingParams & p);
SamplerPtr make_sampler(const SamplingParams & p, const llama_vocab * vocab);
// The grammar constraint of p, or null when it has none.
SamplerPtr make_grammar(const SamplingParams & p, const llama_vocab * vocab);
// Draws the token at batch index idx with the chain, under the grammar if there is one,
// and feeds it to both. `cur` is scratch space reused across calls.
llama_token sample_token(llama_sampler * chain, llama_sampler * grammar, llama_context * ctx, int32_t idx,
                         std::vector<llama_token_data> & cur);
// One sampled token's log-probability under the model's own distribution: the log-softmax of
// the raw logits, before penalties, truncation, temperature or a grammar (what OpenAI reports,
// and llama-server's default, n_probs without post_sampling_probs), with the n_top most likely
// tokens, best first. O(vocabulary) per token; computed only for requests that ask.
struct TokenLogprob {
    llama_token token = LLAMA_TOKEN_NULL;
    float logprob = 0.0f;
    std::vector<std::pair<llama_token, float>> top;
};
TokenLogprob token_logprob(const float * logits, int32_t n_vocab, llama_token chosen, int32_t n_top,
                           std::vector<llama_token_data> & scratch);

// Feeds the end of the prompt to the repetition penalties (as llama.cpp does), so
// that repeating the prompt is penalised too; the grammar does not see it.
void prime_penalties(llama_sampler * chain, const std::vector<llama_token> & context);

}  // namespace lmfast
