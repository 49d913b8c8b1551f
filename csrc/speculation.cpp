#include "speculation.h"

#include <algorithm>

#include "ngram-map.h"

namespace lmfast {

NgramDrafter::NgramDrafter(int32_t n_max, int32_t n_min)
    : n_max_(std::max<int32_t>(1, n_max)), n_min_(std::max<int32_t>(0, n_min)), n_now_(n_max_) {}

std::vector<llama_token> NgramDrafter::draft(const std::vector<llama_token> & history, llama_token next,
                                             int32_t room, int32_t & ignored) {
    ignored = 0;
    if (rest_ > 0) {
        if (--rest_ == 0) n_now_ = 1;
        return {};
    }
    // The lookup drafts nothing shorter than its n-gram: ask for at least that, keep n_now_.
    const int32_t ask = std::min<int32_t>(std::max<int32_t>(n_now_, kNgram), 0xffff);
    std::vector<llama_token> d = common_ngram_simple_draft({kNgram, static_cast<uint16_t>(ask)}, history, next);
    if (static_cast<int32_t>(d.size()) > n_now_) d.resize(static_cast<size_t>(n_now_));
    const auto keep = static_cast<size_t>(std::max<int32_t>(0, room));
    if (d.size() > keep) {
        ignored += static_cast<int32_t>(d.size() - keep);
        d.resize(keep);
    }
    if (static_cast<int32_t>(d.size()) < std::max<int32_t>(n_min_, 1)) {
        ignored += static_cast<int32_t>(d.size());
        d.clear();
    }
    return d;
}

void NgramDrafter::verified(size_t n_drafted, size_t n_accepted) {
    if (n_drafted == 0) return;
    if (n_accepted == n_drafted) {
        n_now_ = std::min(n_max_, std::max<int32_t>(1, n_now_ * 2));
    } else if (n_accepted == 0) {
        n_now_ /= 2;
        if (n_now_ == 0) rest_ = kRestSteps;
    }
}

}  // namespace lmfast
