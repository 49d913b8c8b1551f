#include "draft_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "errors.h"
#include "prefix_cache.h"

namespace lmfast {

namespace {

// llama.cpp's limits (common/speculative.cpp): vocabularies may differ by this many tokens at
// the end, and the first few ids (special tokens that models number differently) are not compared.
constexpr int32_t kMaxVocabDifference = 128;
constexpr int32_t kFirstComparedToken = 5;

std::string bos_eos_mismatch(const llama_vocab * t, const llama_vocab * d) {
    if (llama_vocab_get_add_bos(t) != llama_vocab_get_add_bos(d) ||
        (llama_vocab_get_add_bos(t) && llama_vocab_bos(t) != llama_vocab_bos(d))) {
        return "their BOS tokens differ (adds BOS: target " + std::to_string(llama_vocab_get_add_bos(t)) + ", draft " +
               std::to_string(llama_vocab_get_add_bos(d)) + "; id: target " + std::to_string(llama_vocab_bos(t)) +
               ", draft " + std::to_string(llama_vocab_bos(d)) + ")";
    }
    if (llama_vocab_get_add_eos(t) != llama_vocab_get_add_eos(d) ||
        (llama_vocab_get_add_eos(t) && llama_vocab_eos(t) != llama_vocab_eos(d))) {
        return "their EOS tokens differ (id: target " + std::to_string(llama_vocab_eos(t)) + ", draft " +
               std::to_string(llama_vocab_eos(d)) + ")";
    }
    return "";
}

}  // namespace

std::string draft_incompatibility(const Model & target, const Model & draft) {
    const llama_vocab * t = target.vocab();
    const llama_vocab * d = draft.vocab();
    if (llama_vocab_type(t) != llama_vocab_type(d)) {
        return "the vocabulary types differ (target " + std::to_string(llama_vocab_type(t)) + ", draft " +
               std::to_string(llama_vocab_type(d)) + ")";
    }
    std::string why = bos_eos_mismatch(t, d);
    if (!why.empty()) return why;
    const int32_t nt = llama_vocab_n_tokens(t), nd = llama_vocab_n_tokens(d);
    if (std::abs(nt - nd) > kMaxVocabDifference) {
        return "the vocabulary sizes differ by more than " + std::to_string(kMaxVocabDifference) + " (target " +
               std::to_string(nt) + ", draft " + std::to_string(nd) + ")";
    }
    for (int32_t i = kFirstComparedToken; i < std::min(nt, nd); ++i) {
        if (std::strcmp(llama_vocab_get_text(t, i), llama_vocab_get_text(d, i)) != 0) {
            return "token " + std::to_string(i) + " differs (target '" + llama_vocab_get_text(t, i) + "', draft '" +
                   llama_vocab_get_text(d, i) + "')";
        }
    }
    return "";
}

DraftModel::DraftModel(std::shared_ptr<Model> draft, const Model & target, int32_t n_ctx, int32_t n_seq,
                       int32_t n_threads)
    : model_(std::move(draft)) {
    const std::string why = draft_incompatibility(target, *model_);
    if (!why.empty()) throw InvalidArgument("the draft model cannot draft for this model: " + why);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(std::max<int32_t>(n_ctx, 256));
    cp.n_batch = cp.n_ubatch = std::min<uint32_t>(cp.n_ctx, 512);
    cp.n_seq_max = static_cast<uint32_t>(std::max<int32_t>(n_seq, 1));
    cp.kv_unified = true;  // one window shared by all sequences (see the header)
    cp.n_threads = cp.n_threads_batch = std::max<int32_t>(n_threads, 1);
    cp.no_perf = true;
    ctx_ = llama_init_from_model(model_->get(), cp);
    if (!ctx_) throw ModelLoadError("could not create the draft model's context");
    n_ctx_ = static_cast<int32_t>(llama_n_ctx(ctx_));
    n_batch_ = static_cast<int32_t>(cp.n_batch);
    batch_ = llama_batch_init(n_batch_, 0, 1);
    held_.resize(cp.n_seq_max);
}

DraftModel::~DraftModel() {
    llama_batch_free(batch_);
    if (ctx_) llama_free(ctx_);
}

bool DraftModel::decode(llama_seq_id seq, const llama_token * tokens, int32_t n, llama_pos pos0) {
    batch_.n_tokens = n;
    for (int32_t i = 0; i < n; ++i) {
        batch_.token[i] = tokens[i];
        batch_.pos[i] = pos0 + i;
        batch_.n_seq_id[i] = 1;
        batch_.seq_id[i][0] = seq;
        batch_.logits[i] = i + 1 == n;
    }
    return llama_decode(ctx_, batch_) == 0;
}

// The sequence's cells hold `want` afterwards, its last token decoded with logits. When the
// shared cache is full, the other sequences' cells leave and the decode is tried again.
bool DraftModel::sync(llama_seq_id seq, const std::vector<llama_token> & want) {
    llama_memory_t mem = llama_get_memory(ctx_);
    auto & held = held_[static_cast<size_t>(seq)];
    // The last token again: its logits start the draft.
    const size_t keep = std::min(common_prefix(held, want), want.size() - 1);
    llama_memory_seq_rm(mem, seq, static_cast<llama_pos>(keep), -1);
    held.resize(keep);
    while (held.size() < want.size()) {
        const auto n = static_cast<int32_t>(std::min<size_t>(n_batch_, want.size() - held.size()));
        const auto pos = static_cast<llama_pos>(held.size());
        bool ok = decode(seq, want.data() + held.size(), n, pos);
        if (!ok) {
            for (size_t s = 0; s < held_.size(); ++s) {
                if (static_cast<llama_seq_id>(s) == seq || held_[s].empty()) continue;
                llama_memory_seq_rm(mem, static_cast<llama_seq_id>(s), -1, -1);
                held_[s].clear();
            }
            ok = decode(seq, want.data() + held.size(), n, pos);
        }
        if (!ok) {
            llama_memory_seq_rm(mem, seq, -1, -1);
            held.clear();
            return false;
        }
        held.insert(held.end(), want.begin() + pos, want.begin() + pos + n);
    }
    return true;
}

std::pair<llama_token, float> DraftModel::top(bool with_p) const {
    const float * logits = llama_get_logits_ith(ctx_, -1);
    const int32_t n_vocab = llama_vocab_n_tokens(model_->vocab());
    const auto best = static_cast<llama_token>(std::max_element(logits, logits + n_vocab) - logits);
    if (!with_p) return {best, 1.0f};
    // llama.cpp's draft sampler keeps the 10 likeliest (top-k 10) before the softmax whose first
    // probability it compares with p_min; the same here, so the key means what it means there.
    // One pass without copying the logits: the 10 largest, kept in descending order.
    constexpr int32_t K = 10;
    float head[K];
    int32_t k = 0;
    for (int32_t t = 0; t < n_vocab; ++t) {
        const float l = logits[t];
        if (k == K && l <= head[K - 1]) continue;
        int32_t i = k < K ? k++ : K - 1;
        for (; i > 0 && head[i - 1] < l; --i) head[i] = head[i - 1];
        head[i] = l;
    }
    double sum = 0.0;
    for (int32_t i = 0; i < k; ++i) sum += std::exp(static_cast<double>(head[i] - head[0]));
    return {best, static_cast<float>(1.0 / sum)};
}

std::vector<llama_token> DraftModel::draft(llama_seq_id seq, const std::vector<llama_token> & history, llama_token next,
                                           int32_t n, int32_t n_vocab_target, float p_min) {
    std::vector<llama_token> out;
    if (seq < 0 || static_cast<size_t>(seq) >= held_.size()) return out;
    std::vector<llama_token> want(history);
    want.push_back(next);
    n = std::min<int32_t>(n, n_ctx_ - static_cast<int32_t>(want.size()));
    const int32_t n_vocab = llama_vocab_n_tokens(model_->vocab());
    // A target token the draft has no id for cannot be evaluated by it (llama.cpp rejects the batch).
    if (n <= 0 || std::any_of(want.begin(), want.end(), [&](llama_token t) { return t < 0 || t >= n_vocab; })) {
        return out;
    }
    if (!sync(seq, want)) return out;
    auto & held = held_[static_cast<size_t>(seq)];
    const auto t0 = std::chrono::steady_clock::now();
    for (int32_t i = 0; i < n; ++i) {
        const auto [t, p] = top(p_min > 0.0f);
        if (t >= n_vocab_target || p < p_min) break;
        out.push_back(t);
        // The last token needs no decode; nor does an end of generation (nothing follows it).
        if (i + 1 == n || llama_vocab_is_eog(model_->vocab(), t)) break;
        if (!decode(seq, &t, 1, static_cast<llama_pos>(held.size()))) break;
        held.push_back(t);
    }
    // Each token drafted took one argmax and all but the last one decode: per token, about one
    // decode (the catch-up in sync() is a batch, far cheaper per token, and not counted).
    if (out.size() > 1) {
        const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double per = took / static_cast<double>(out.size() - 1);
        sec_per_token_ = sec_per_token_ > 0 ? 0.8 * sec_per_token_ + 0.2 * per : per;
    }
    return out;
}

}  // namespace lmfast
