#include "speculation.h"

#include <algorithm>

#include "ngram-map.h"

namespace lmfast {

NgramDrafter::NgramDrafter(int32_t n_max, int32_t n_min, bool backoff)
    : n_max_(std::max<int32_t>(1, n_max)), n_min_(std::max<int32_t>(0, n_min)), backoff_(backoff) {}

int32_t NgramDrafter::best_length(double cost_ratio) const {
    const double p = accepted_ / (accepted_ + rejected_);
    double best = 1.0, expected = 1.0, term = 1.0;
    int32_t best_k = 0;
    for (int32_t k = 1; k <= n_max_; ++k) {
        term *= p;
        expected += term;
        const double gain = expected / (1.0 + k * cost_ratio);
        if (gain > best) {
            best = gain;
            best_k = k;
        }
    }
    return best_k;
}

int32_t NgramDrafter::length(double cost_ratio) {
    const int32_t k = best_length(cost_ratio);
    probing_ = k == 0;
    if (k > 0) return k;
    return ++idle_ < probe_steps_ ? 0 : 1;  // a probe
}

std::vector<llama_token> NgramDrafter::fit(std::vector<llama_token> d, int32_t k, int32_t room, int32_t & ignored) {
    ignored = 0;
    if (static_cast<int32_t>(d.size()) > k) d.resize(static_cast<size_t>(k));
    const auto keep = static_cast<size_t>(std::max<int32_t>(0, room));
    if (d.size() > keep) {
        ignored += static_cast<int32_t>(d.size() - keep);
        d.resize(keep);
    }
    if (static_cast<int32_t>(d.size()) < std::max<int32_t>(n_min_, 1)) {
        ignored += static_cast<int32_t>(d.size());
        d.clear();
    }
    if (!d.empty()) idle_ = 0;
    return d;
}

std::vector<llama_token> NgramDrafter::draft(const std::vector<llama_token> & history, llama_token next,
                                             int32_t room, double cost_ratio, int32_t & ignored) {
    ignored = 0;
    const int32_t k = length(cost_ratio);
    if (k == 0) return {};
    // The lookup drafts nothing shorter than its n-gram: ask for at least that, keep k.
    const int32_t ask = std::min<int32_t>(std::max<int32_t>(k, kNgram), 0xffff);
    return fit(common_ngram_simple_draft({kNgram, static_cast<uint16_t>(ask)}, history, next), k, room, ignored);
}

void NgramDrafter::verified(size_t n_drafted, size_t n_accepted) {
    if (n_drafted == 0) return;
    if (backoff_ && probing_) {
        probe_steps_ = n_accepted > 0 ? kProbeSteps : std::min(2 * probe_steps_, kMaxProbeSteps);
    }
    // Older drafts count less: a request's text moves between copying and writing.
    constexpr double kDecay = 0.8;
    accepted_ = kDecay * accepted_ + static_cast<double>(n_accepted);
    rejected_ = kDecay * rejected_ + (n_accepted < n_drafted ? 1.0 : 0.0);
}

}  // namespace lmfast
