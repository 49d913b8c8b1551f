#include "speculation.h"

#include <algorithm>

namespace lmfast {

void NgramLookup::index(const std::vector<llama_token> & history) {
    // The last 8 tokens indexed still in place: the history grew at its end.
    const size_t n = inp_.size(), tail = std::min<size_t>(n, 8);
    const bool extends = history.size() >= n &&
                         std::equal(inp_.end() - static_cast<ptrdiff_t>(tail), inp_.end(),
                                    history.begin() + static_cast<ptrdiff_t>(n - tail));
    if (!extends) {  // a context shift dropped tokens: what followed what has changed
        context_.clear();
        inp_.clear();
    }
    const size_t before = inp_.size();
    if (history.size() == before) return;
    inp_.insert(inp_.end(), history.begin() + static_cast<ptrdiff_t>(before), history.end());
    common_ngram_cache_update(context_, LLAMA_NGRAM_MIN, LLAMA_NGRAM_MAX, inp_,
                              static_cast<int>(inp_.size() - before), false);
}

std::vector<llama_token> NgramLookup::draft(const std::vector<llama_token> & history, llama_token next, int32_t k) {
    if (k <= 0) return {};
    index(history);
    std::vector<llama_token> d{next};
    inp_.push_back(next);  // the lookup reads the text so far, `next` included, from inp_
    common_ngram_cache_draft(inp_, d, k, LLAMA_NGRAM_MIN, LLAMA_NGRAM_MAX, context_, none_, none_);
    inp_.pop_back();
    d.erase(d.begin());
    return d;
}

}  // namespace lmfast
