#include "speculation.h"

#include <algorithm>

#include "ngram-map.h"

namespace lmfast {

std::vector<llama_token> ngram_draft(const std::vector<llama_token> & history, llama_token next, int32_t k) {
    if (k <= 0) return {};
    // The lookup drafts nothing shorter than its n-gram: ask for at least that (the caller cuts
    // the draft to k).
    const int32_t ask = std::min<int32_t>(std::max<int32_t>(k, kDraftNgram), 0xffff);
    return common_ngram_simple_draft({kDraftNgram, static_cast<uint16_t>(ask)}, history, next);
}

}  // namespace lmfast
