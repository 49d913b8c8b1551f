#include "sampling.h"

#include <climits>
#include <cmath>
#include <deque>
#include <regex>
#include <algorithm>
#include <unordered_map>

#include "errors.h"

namespace lmfast {

namespace {

// Repetition penalties that cost O(recent tokens) per step instead of llama.cpp's
// O(vocabulary) hash look-ups: when the candidates are still the unsorted full
// vocabulary (data[id].id == id, as llama_sampler_sample builds them), each
// recently seen token is penalised in place. Same arithmetic as llama.cpp's.
struct Penalties {
    int32_t last_n;
    float repeat, freq, present;
    std::deque<llama_token> prev;
    std::unordered_map<llama_token, int32_t> count;
};

void penalise(const Penalties & p, llama_token_data & d, int32_t n) {
    d.logit = d.logit <= 0 ? d.logit * p.repeat : d.logit / p.repeat;
    d.logit -= float(n) * p.freq + float(n > 0) * p.present;
}

const char * penalties_name(const llama_sampler *) { return "lmfast-penalties"; }

void penalties_accept(llama_sampler * s, llama_token tok) {
    auto * p = static_cast<Penalties *>(s->ctx);
    p->prev.push_back(tok);
    p->count[tok]++;
    if (static_cast<int64_t>(p->prev.size()) > p->last_n) {
        auto it = p->count.find(p->prev.front());
        if (--it->second == 0) p->count.erase(it);
        p->prev.pop_front();
    }
}

void penalties_apply(llama_sampler * s, llama_token_data_array * cur) {
    auto * p = static_cast<Penalties *>(s->ctx);
    if (p->count.empty()) return;
    bool indexed = true;
    for (const auto & kv : p->count) {
        if (kv.first < 0 || static_cast<size_t>(kv.first) >= cur->size || cur->data[kv.first].id != kv.first) {
            indexed = false;
            break;
        }
    }
    if (indexed) {
        for (const auto & kv : p->count) penalise(*p, cur->data[kv.first], kv.second);
    } else {
        for (size_t i = 0; i < cur->size; ++i) {
            auto it = p->count.find(cur->data[i].id);
            if (it != p->count.end()) penalise(*p, cur->data[i], it->second);
        }
    }
    cur->sorted = false;
}

void penalties_reset(llama_sampler * s) {
    auto * p = static_cast<Penalties *>(s->ctx);
    p->prev.clear();
    p->count.clear();
}

llama_sampler * penalties_init(int32_t last_n, float repeat, float freq, float present);

llama_sampler * penalties_clone(const llama_sampler * s) {
    const auto * p = static_cast<const Penalties *>(s->ctx);
    llama_sampler * c = penalties_init(p->last_n, p->repeat, p->freq, p->present);
    *static_cast<Penalties *>(c->ctx) = *p;
    return c;
}

void penalties_free(llama_sampler * s) { delete static_cast<Penalties *>(s->ctx); }

llama_sampler_i penalties_iface = [] {
    llama_sampler_i i{};
    i.name = penalties_name;
    i.accept = penalties_accept;
    i.apply = penalties_apply;
    i.reset = penalties_reset;
    i.clone = penalties_clone;
    i.free = penalties_free;
    return i;
}();

llama_sampler * penalties_init(int32_t last_n, float repeat, float freq, float present) {
    auto * p = new Penalties{last_n < 0 ? INT32_MAX : last_n, repeat, freq, present, {}, {}};
    return llama_sampler_init(&penalties_iface, p);
}

}  // namespace

void validate(const SamplingParams & p) {
    auto bad = [](const std::string & what) { throw InvalidArgument(what); };
    if (!std::isfinite(p.temperature) || p.temperature < 0) bad("temperature must be >= 0");
    if (!std::isfinite(p.top_p) || p.top_p < 0 || p.top_p > 1) bad("topPSampling must be between 0 and 1");
    if (!std::isfinite(p.min_p) || p.min_p < 0 || p.min_p > 1) bad("minPSampling must be between 0 and 1");
    if (!std::isfinite(p.repeat_penalty) || p.repeat_penalty <= 0) bad("repeatPenalty must be > 0");
    if (p.repeat_last_n < -1) bad("repeat_last_n must be >= -1");
    if (!std::isfinite(p.frequency_penalty) || !std::isfinite(p.presence_penalty)) bad("penalties must be finite");
}

void prime_penalties(llama_sampler * chain, const std::vector<llama_token> & context) {
    for (int32_t i = 0, n = llama_sampler_chain_n(chain); i < n; ++i) {
        llama_sampler * s = llama_sampler_chain_get(chain, i);
        if (s->iface != &penalties_iface) continue;
        const auto * p = static_cast<const Penalties *>(s->ctx);
        const size_t take = std::min<size_t>(context.size(), static_cast<size_t>(p->last_n));
        for (size_t j = context.size() - take; j < context.size(); ++j) penalties_accept(s, context[j]);
    }
}

SamplerPtr make_sampler(const SamplingParams & p, const llama_vocab * vocab) {
    validate(p);
    llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    SamplerPtr chain(llama_sampler_chain_init(cp));

    // Same order as llama.cpp's common sampler: penalties, truncation, temperature, draw
    // (the grammar is separate: see sample_token).
    (void) vocab;
    if ((p.repeat_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) &&
        p.repeat_last_n != 0) {
        llama_sampler_chain_add(chain.get(), penalties_init(p.repeat_last_n, p.repeat_penalty,
                                                            p.frequency_penalty, p.presence_penalty));
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

SamplerPtr make_grammar(const SamplingParams & p, const llama_vocab * vocab) {
    if (p.grammar.empty()) return nullptr;
    llama_sampler * g = nullptr;
    if (p.grammar_lazy) {
        if (p.grammar_trigger_patterns.empty() && p.grammar_trigger_tokens.empty()) {
            throw InvalidArgument("a lazy grammar needs at least one trigger pattern or token");
        }
        std::vector<const char *> patterns;
        for (const auto & s : p.grammar_trigger_patterns) {
            try {
                std::regex check(s);  // llama.cpp compiles them the same way and would throw from inside
            } catch (const std::regex_error & e) {
                throw InvalidArgument("grammar trigger pattern '" + s + "' is not a regular expression: " + e.what());
            }
            patterns.push_back(s.c_str());
        }
        g = llama_sampler_init_grammar_lazy_patterns(vocab, p.grammar.c_str(), "root", patterns.data(), patterns.size(),
                                                     p.grammar_trigger_tokens.data(), p.grammar_trigger_tokens.size());
    } else {
        g = llama_sampler_init_grammar(vocab, p.grammar.c_str(), "root");
    }
    if (!g) throw InvalidArgument("the GBNF grammar could not be parsed (llama.cpp logs where)");
    SamplerPtr grammar(g);
    try {
        for (llama_token t : p.grammar_prefill) llama_sampler_accept(g, t);
    } catch (const std::exception & e) {
        throw InvalidArgument(std::string("the grammar does not accept the generation prompt: ") + e.what());
    }
    return grammar;
}

llama_token sample_token(llama_sampler * chain, llama_sampler * grammar, llama_context * ctx, int32_t idx,
                         std::vector<llama_token_data> & cur) {
    if (!grammar) return llama_sampler_sample(chain, ctx, idx);
    // Checking every vocabulary entry against the grammar costs far more than a
    // forward pass of a small model, so sample without it first and check only the
    // token drawn; apply the grammar to the whole distribution only when that token
    // is rejected (llama.cpp's common sampler does the same).
    const float * logits = llama_get_logits_ith(ctx, idx);
    if (!logits) throw std::runtime_error("no logits for the sampled position");
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));
    auto draw = [&](bool constrained) {
        cur.resize(static_cast<size_t>(n_vocab));
        for (llama_token t = 0; t < n_vocab; ++t) cur[t] = llama_token_data{t, logits[t], 0.0f};
        llama_token_data_array arr{cur.data(), cur.size(), -1, false};
        if (constrained) llama_sampler_apply(grammar, &arr);
        llama_sampler_apply(chain, &arr);
        if (arr.selected < 0 || arr.selected >= static_cast<int64_t>(arr.size)) {
            throw std::runtime_error("the sampler chain selected no token");
        }
        return arr.data[arr.selected].id;
    };
    llama_token tok = draw(false);
    llama_token_data single{tok, 1.0f, 0.0f};
    llama_token_data_array one{&single, 1, -1, false};
    llama_sampler_apply(grammar, &one);
    if (!std::isfinite(single.logit)) tok = draw(true);
    llama_sampler_accept(grammar, tok);
    llama_sampler_accept(chain, tok);
    return tok;
}

// The normaliser in double over the whole vocabulary: float sums of ~50k terms drift by more
// than the 1e-3 the values are compared with llama.cpp's at.
TokenLogprob token_logprob(const float * logits, int32_t n_vocab, llama_token chosen, int32_t n_top,
                           std::vector<llama_token_data> & scratch) {
    float max = -INFINITY;
    for (int32_t t = 0; t < n_vocab; ++t) max = std::max(max, logits[t]);
    double sum = 0.0;
    for (int32_t t = 0; t < n_vocab; ++t) sum += std::exp(static_cast<double>(logits[t]) - max);
    const double lse = static_cast<double>(max) + std::log(sum);
    TokenLogprob out;
    out.token = chosen;
    out.logprob = static_cast<float>(static_cast<double>(logits[chosen]) - lse);
    n_top = std::min(n_top, n_vocab);
    if (n_top <= 0) return out;
    scratch.resize(static_cast<size_t>(n_vocab));
    for (llama_token t = 0; t < n_vocab; ++t) scratch[t] = llama_token_data{t, logits[t], 0.0f};
    std::partial_sort(scratch.begin(), scratch.begin() + n_top, scratch.end(),
                      [](const llama_token_data & a, const llama_token_data & b) { return a.logit > b.logit; });
    out.top.reserve(static_cast<size_t>(n_top));
    for (int32_t i = 0; i < n_top; ++i) {
        out.top.emplace_back(scratch[i].id, static_cast<float>(static_cast<double>(scratch[i].logit) - lse));
    }
    return out;
}

}  // namespace lmfast
