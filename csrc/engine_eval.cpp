// Engine::eval_logits: teacher-forced evaluation for tests and debugging (engine.h). It runs on
// the engine thread as a job between requests, never inside a scheduler step, so it lives apart
// from the scheduler's own code.
#include <array>
#include <future>
#include <stdexcept>

#include "engine.h"
#include "errors.h"

namespace lmfast {

std::vector<std::vector<float>> Engine::eval_logits(const std::vector<std::vector<llama_token>> & seqs,
                                                    const std::vector<int32_t> & n_prefix) {
    const int32_t k = static_cast<int32_t>(seqs.size());
    if (k < 1 || k > params_.n_seq) {
        throw InvalidArgument("eval_logits takes 1.." + std::to_string(params_.n_seq) + " sequences");
    }
    if (n_prefix.size() != seqs.size()) throw InvalidArgument("eval_logits: one prefix length per sequence");
    int64_t n_first = 0;
    for (int32_t s = 0; s < k; ++s) {
        if (n_prefix[s] < 1 || n_prefix[s] > static_cast<int32_t>(seqs[s].size()) ||
            static_cast<int32_t>(seqs[s].size()) > n_ctx_) {
            throw InvalidArgument("eval_logits: each sequence needs 1 <= n_prefix <= size <= n_ctx");
        }
        model_->check_tokens(seqs[s]);
        n_first += n_prefix[s];
    }
    if (n_first > params_.n_batch) throw InvalidArgument("eval_logits: all prefixes must fit one batch");
    return run_job([this, &seqs, &n_prefix, k] {
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (stop_) throw ModelUnloaded("the model has been unloaded");
        }
        grow(k);  // sequences 0..k-1 must exist
        if (!ctx_) throw ModelUnloaded("the model's KV cache was lost");
        if (n_streams_ < k) throw std::runtime_error("eval_logits: no memory for " + std::to_string(k) + " KV streams");
        use_lora(lora_defaults());  // the setting a request that names no adapter gets
        const int32_t n_vocab = model_->n_vocab();
        llama_memory_t mem = llama_get_memory(ctx_);
        std::vector<std::vector<float>> out(k);
        auto clear = [&] {
            for (int32_t s = 0; s < k; ++s) {
                llama_memory_seq_rm(mem, s, -1, -1);
                cache_.tokens(s).clear();
            }
        };
        clear();
        auto run = [&](const std::vector<std::array<int32_t, 3>> & items) {
            // items: (sequence, first position, tokens); logits after the last token of each.
            batch_.n_tokens = 0;
            std::vector<std::pair<int32_t, int32_t>> outs;
            for (const auto & [s, p0, n_each] : items) {
                for (int32_t j = 0; j < n_each; ++j) {
                    const int32_t i = batch_add(seqs[s][p0 + j], p0 + j, s, j + 1 == n_each);
                    if (j + 1 == n_each) outs.emplace_back(s, i);
                }
            }
            if (llama_decode(ctx_, batch_) != 0) throw std::runtime_error("eval_logits: llama_decode failed");
            for (const auto & [s, i] : outs) {
                const float * l = llama_get_logits_ith(ctx_, i);
                out[s].insert(out[s].end(), l, l + n_vocab);
            }
        };
        try {
            std::vector<std::array<int32_t, 3>> items;
            for (int32_t s = 0; s < k; ++s) items.push_back({s, 0, n_prefix[s]});
            run(items);
            for (int32_t t = 0;; ++t) {
                items.clear();
                for (int32_t s = 0; s < k; ++s) {
                    const int32_t p = n_prefix[s] + t;
                    if (p < static_cast<int32_t>(seqs[s].size())) items.push_back({s, p, 1});
                }
                if (items.empty()) break;
                run(items);
            }
        } catch (...) {
            clear();
            throw;
        }
        clear();
        return out;
    });
}

}  // namespace lmfast
