#include "embedding.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "common.h"
#include "errors.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

namespace lmfast {

namespace {

llama_context * make_context(llama_model * model, const llama_context_params & cp) {
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        throw ModelLoadError("could not create a llama.cpp embedding context of " + std::to_string(cp.n_ctx) +
                             " tokens (out of memory, or a setting the model does not support)");
    }
    return ctx;
}

// A persistent pool of CPU compute threads for this context (as the engine keeps
// one): without it ggml starts and joins its workers on every llama_decode, which
// costs a lot on a busy machine. Looked up through the backend registry so that it
// also works when the CPU backend is a dynamically loaded variant.
template <typename F>
F * cpu_proc(const char * name) {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return nullptr;
    return reinterpret_cast<F *>(ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), name));
}

const char * pooling_name(enum llama_pooling_type p) {
    switch (p) {
        case LLAMA_POOLING_TYPE_MEAN: return "mean";
        case LLAMA_POOLING_TYPE_CLS: return "cls";
        case LLAMA_POOLING_TYPE_LAST: return "last";
        case LLAMA_POOLING_TYPE_RANK: return "rank";
        case LLAMA_POOLING_TYPE_NONE: return "none";
        default: return "unspecified";
    }
}

}  // namespace

EmbeddingContext::EmbeddingContext(std::shared_ptr<Model> model, const EmbeddingParams & params, bool rank)
    : model_(std::move(model)), rank_(rank) {
    if (!model_) throw InvalidArgument("no model");
    llama_model * mdl = model_->get();
    const int32_t n_train = std::max(1, llama_model_n_ctx_train(mdl));
    if (params.n_ctx < 0) throw InvalidArgument("context length must not be negative");
    if (params.n_seq_max < 1 || params.n_seq_max > 256) {
        throw InvalidArgument("the number of texts per batch must be 1..256");
    }
    if (llama_model_has_encoder(mdl) && llama_model_has_decoder(mdl)) {
        throw InvalidArgument("encoder-decoder models (such as T5) cannot be used as embedding models");
    }
    // Absolute position embeddings (BERT) have exactly n_ctx_train rows: a longer
    // context would index past them. Cap at the trained length for every model.
    n_ctx_ = params.n_ctx > 0 ? std::min(params.n_ctx, n_train) : n_train;
    n_batch_ = params.n_batch > 0 ? std::max(params.n_batch, n_ctx_) : std::max(n_ctx_, 1024);
    n_seq_max_ = params.n_seq_max;
    pack_tokens_ = params.pack_tokens > 0 ? std::min(params.pack_tokens, n_batch_) : n_batch_;
    n_threads_ = params.n_threads > 0 ? params.n_threads : std::max(1, common_cpu_get_num_math());

    llama_context_params cp = llama_context_default_params();
    cp.embeddings = true;
    cp.pooling_type = LLAMA_POOLING_TYPE_UNSPECIFIED;  // the model's own (from its GGUF)
    // Non-causal encoders process a batch in one micro-batch: n_ubatch == n_batch.
    cp.n_ctx = static_cast<uint32_t>(n_batch_);
    cp.n_batch = static_cast<uint32_t>(n_batch_);
    cp.n_ubatch = static_cast<uint32_t>(n_batch_);
    cp.n_seq_max = static_cast<uint32_t>(n_seq_max_);
    cp.kv_unified = true;   // decoder-based embedders: one cache, cleared before every batch
    cp.n_threads = n_threads_;
    cp.n_threads_batch = n_threads_;
    cp.rope_freq_base = params.rope_freq_base;
    cp.rope_freq_scale = params.rope_freq_scale;
    cp.flash_attn_type = params.flash_attn < 0 ? LLAMA_FLASH_ATTN_TYPE_AUTO
                         : params.flash_attn == 0 ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                  : LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.no_perf = true;

    ctx_ = make_context(mdl, cp);
    pooling_ = llama_pooling_type(ctx_);
    if ((pooling_ == LLAMA_POOLING_TYPE_RANK) != rank_) {
        llama_free(ctx_);
        ctx_ = nullptr;
        throw InvalidArgument(rank_ ? std::string("this model is not a reranker (its pooling is ") +
                                          pooling_name(pooling_) + ", not rank): load it as an embedding model or an LLM"
                                    : "this model is a reranker (rank pooling), not an embedding model");
    }
    if (pooling_ == LLAMA_POOLING_TYPE_NONE || pooling_ == LLAMA_POOLING_TYPE_UNSPECIFIED) {
        // The GGUF names no pooling: average the token vectors, as sentence-transformers does by default.
        llama_free(ctx_);
        ctx_ = nullptr;
        cp.pooling_type = LLAMA_POOLING_TYPE_MEAN;
        ctx_ = make_context(mdl, cp);
        pooling_ = llama_pooling_type(ctx_);
    }
    if (auto * fn = cpu_proc<decltype(ggml_threadpool_new)>("ggml_threadpool_new")) {
        ggml_threadpool_params tpp = ggml_threadpool_params_default(n_threads_);
        threadpool_ = fn(&tpp);
        if (threadpool_) llama_attach_threadpool(ctx_, threadpool_, nullptr);
    }
    n_embd_ = rank_ ? static_cast<int32_t>(llama_model_n_cls_out(mdl)) : llama_model_n_embd_out(mdl);
    if (n_embd_ <= 0) n_embd_ = llama_model_n_embd(mdl);
    batch_ = llama_batch_init(n_batch_, 0, 1);
}

EmbeddingContext::~EmbeddingContext() {
    llama_batch_free(batch_);
    close();
}

void EmbeddingContext::close() {
    std::lock_guard<std::mutex> lk(mu_);
    if (ctx_) {
        llama_free(ctx_);
        ctx_ = nullptr;
    }
    if (threadpool_) {
        if (auto * fn = cpu_proc<decltype(ggml_threadpool_free)>("ggml_threadpool_free")) fn(threadpool_);
        threadpool_ = nullptr;
    }
}

std::string EmbeddingContext::pooling() const { return pooling_name(pooling_); }

std::vector<std::vector<float>> EmbeddingContext::embed(const std::vector<std::string> & texts) {
    std::vector<std::vector<llama_token>> seqs;
    seqs.reserve(texts.size());
    for (const auto & t : texts) seqs.push_back(model_->tokenize(t, /*add_special=*/true, /*parse_special=*/false));
    return embed_tokens(seqs);
}

std::vector<std::vector<float>> EmbeddingContext::embed_tokens(const std::vector<std::vector<llama_token>> & seqs) {
    for (size_t i = 0; i < seqs.size(); ++i) {
        const size_t n = seqs[i].size();
        if (n == 0) {
            throw InvalidArgument("text " + std::to_string(i) + " has no tokens");
        }
        if (n > static_cast<size_t>(n_ctx_)) {
            throw InvalidArgument("text " + std::to_string(i) + " is " + std::to_string(n) +
                                  " tokens long, longer than the embedding model's context of " +
                                  std::to_string(n_ctx_) + " tokens (lmfast does not truncate: shorten or split it)");
        }
        model_->check_tokens(seqs[i]);
    }
    std::vector<std::vector<float>> out(seqs.size());
    std::lock_guard<std::mutex> lk(mu_);
    if (!ctx_) throw ModelUnloaded("the embedding model has been unloaded");
    size_t first = 0;
    while (first < seqs.size()) {
        // Pack texts in order while they fit the batch.
        size_t count = 0;
        size_t tokens = 0;
        while (first + count < seqs.size() && count < static_cast<size_t>(n_seq_max_) &&
               (count == 0 || tokens + seqs[first + count].size() <= static_cast<size_t>(pack_tokens_))) {
            tokens += seqs[first + count].size();
            ++count;
        }
        decode_group(seqs, first, count, out);
        first += count;
    }
    return out;
}

void EmbeddingContext::decode_group(const std::vector<std::vector<llama_token>> & seqs, size_t first, size_t count,
                                    std::vector<std::vector<float>> & out) {
    if (llama_memory_t mem = llama_get_memory(ctx_)) llama_memory_clear(mem, true);
    batch_.n_tokens = 0;
    for (size_t s = 0; s < count; ++s) {
        const auto & toks = seqs[first + s];
        for (size_t k = 0; k < toks.size(); ++k) {
            const int32_t i = batch_.n_tokens++;
            batch_.token[i] = toks[k];
            batch_.pos[i] = static_cast<llama_pos>(k);
            batch_.n_seq_id[i] = 1;
            batch_.seq_id[i][0] = static_cast<llama_seq_id>(s);
            batch_.logits[i] = 1;
        }
    }
    const int32_t ret = llama_decode(ctx_, batch_);
    ++decode_calls_;
    if (ret != 0) {
        throw std::runtime_error("llama_decode failed with code " + std::to_string(ret) + " while embedding " +
                                 std::to_string(count) + " texts");
    }
    for (size_t s = 0; s < count; ++s) {
        const float * v = llama_get_embeddings_seq(ctx_, static_cast<llama_seq_id>(s));
        if (!v) throw std::runtime_error("llama.cpp returned no pooled embedding for a text");
        auto & dst = out[first + s];
        if (rank_) {  // a classifier's scores: raw, as llama-server and llama-embedding report them
            dst.assign(v, v + n_embd_);
            continue;
        }
        double norm = 0.0;
        for (int32_t j = 0; j < n_embd_; ++j) norm += static_cast<double>(v[j]) * v[j];
        norm = std::sqrt(norm);
        // Same guard as torch.nn.functional.normalize (eps 1e-12).
        const double scale = 1.0 / std::max(norm, 1e-12);
        dst.resize(n_embd_);
        for (int32_t j = 0; j < n_embd_; ++j) dst[j] = static_cast<float>(v[j] * scale);
    }
}

}  // namespace lmfast
