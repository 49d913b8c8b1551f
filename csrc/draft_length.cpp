#include "draft_length.h"

#include <algorithm>

namespace lmfast {

DraftLength::DraftLength(int32_t n_max, int32_t n_min, bool backoff, double prior_accepted)
    : n_max_(std::max<int32_t>(1, n_max)), n_min_(std::max<int32_t>(0, n_min)),
      accepted_(std::max(0.0, prior_accepted)), backoff_(backoff) {}

int32_t DraftLength::best_length(const StepCost & cost, int32_t rows) const {
    const double p = accepted_ / (accepted_ + rejected_);
    const double others = std::max<int32_t>(rows, 1) - 1;
    double best = 1.0, expected = 1.0, term = 1.0;
    int32_t best_k = 0;
    for (int32_t k = 1; k <= n_max_; ++k) {
        term *= p;
        expected += term;
        const double gain = (others + expected) / ((others + 1.0) * cost(k));
        if (gain > best) {
            best = gain;
            best_k = k;
        }
    }
    return best_k;
}

int32_t DraftLength::length(const StepCost & cost, int32_t rows) {
    if (quiet_left_ > 0) {
        --quiet_left_;
        return 0;
    }
    const int32_t k = best_length(cost, rows);
    probing_ = k == 0;
    if (k > 0) return k;
    return ++idle_ < probe_steps_ ? 0 : 1;  // a probe
}

std::vector<llama_token> DraftLength::fit(std::vector<llama_token> d, int32_t k, int32_t room, int32_t & ignored) {
    ignored = 0;
    if (static_cast<int32_t>(d.size()) > k) d.resize(static_cast<size_t>(std::max<int32_t>(0, k)));
    const auto keep = static_cast<size_t>(std::max<int32_t>(0, room));
    if (d.size() > keep) {
        ignored += static_cast<int32_t>(d.size() - keep);
        d.resize(keep);
    }
    if (static_cast<int32_t>(d.size()) < std::max<int32_t>(n_min_, 1)) {
        ignored += static_cast<int32_t>(d.size());
        d.clear();
    }
    if (!d.empty()) idle_ = quiet_steps_ = 0;
    return d;
}

void DraftLength::verified(size_t n_drafted, size_t n_accepted) {
    if (n_drafted == 0) return;
    if (backoff_ && probing_) {
        probe_steps_ = n_accepted > 0 ? kProbeSteps : std::min(2 * probe_steps_, kMaxProbeSteps);
    }
    // Older drafts count less: a request's text moves between copying and writing.
    constexpr double kDecay = 0.8;
    accepted_ = kDecay * accepted_ + static_cast<double>(n_accepted);
    rejected_ = kDecay * rejected_ + (n_accepted < n_drafted ? 1.0 : 0.0);
}

void DraftLength::drafted_nothing() {
    quiet_steps_ = std::min(std::max<int32_t>(1, 2 * quiet_steps_), kMaxQuietSteps);
    quiet_left_ = quiet_steps_;
}

}  // namespace lmfast
