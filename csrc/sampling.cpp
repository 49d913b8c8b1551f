#include "sampling.h"

#include <cmath>

#include "errors.h"

namespace lmfast {

void validate(const SamplingParams & p) {
    auto bad = [](const std::string & what) { throw InvalidArgument(what); };
    if (!std::isfinite(p.temperature) || p.temperature < 0) bad("temperature must be >= 0");
    if (!std::isfinite(p.top_p) || p.top_p < 0 || p.top_p > 1) bad("topPSampling must be between 0 and 1");
    if (!std::isfinite(p.min_p) || p.min_p < 0 || p.min_p > 1) bad("minPSampling must be between 0 and 1");
    if (!std::isfinite(p.repeat_penalty) || p.repeat_penalty <= 0) bad("repeatPenalty must be > 0");
    if (p.repeat_last_n < -1) bad("repeat_last_n must be >= -1");
    if (!std::isfinite(p.frequency_penalty) || !std::isfinite(p.presence_penalty)) bad("penalties must be finite");
}

SamplerPtr make_sampler(const SamplingParams & p, const llama_vocab * vocab) {
    validate(p);
    llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    SamplerPtr chain(llama_sampler_chain_init(cp));

    // Same order as llama.cpp's common sampler: grammar, penalties, truncation, temperature, draw.
    if (!p.grammar.empty()) {
        llama_sampler * g = llama_sampler_init_grammar(vocab, p.grammar.c_str(), "root");
        if (!g) throw InvalidArgument("the grammar could not be parsed");
        llama_sampler_chain_add(chain.get(), g);
    }
    if (p.repeat_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
        llama_sampler_chain_add(chain.get(), llama_sampler_init_penalties(
            llama_vocab_n_tokens(vocab), p.repeat_last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty));
    }
    if (p.temperature <= 0.0f) {
        llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
        return chain;
    }
    if (p.top_k > 0) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_k(p.top_k));
    if (p.top_p < 1.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(p.top_p, 1));
    if (p.min_p > 0.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_min_p(p.min_p, 1));
    llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(p.temperature));
    llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(p.seed));
    return chain;
}

}  // namespace lmfast
