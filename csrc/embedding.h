// Sentence embeddings: a llama_context with embeddings on, pooling as the model
// says (mean for sentence-transformers' MiniLM), several texts per llama_decode.
// Returns L2-normalised vectors. Thread-safe: one mutex around the context.
// The same context serves rerankers (rank pooling, rerank.h): then each text's
// output is the classifier head's raw scores, not a normalised vector.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llama.h"
#include "model.h"

namespace lmfast {

struct EmbeddingParams {
    int32_t n_ctx = 0;          // longest text in tokens; 0: the model's trained context
    int32_t n_batch = 0;        // most tokens per llama_decode; 0: max(n_ctx, 1024)
    int32_t n_seq_max = 64;     // most texts per llama_decode
    // Most tokens of several texts packed into one llama_decode (one text alone may use all of
    // n_batch); 0: n_batch. A non-causal encoder's attention spans the whole batch, masked per
    // text, so its cost grows with the square of the packed tokens (see RERANK_PACK_TOKENS).
    int32_t pack_tokens = 0;
    int32_t n_threads = -1;     // -1: physical cores
    float rope_freq_base = 0.0f;   // 0: from the model
    float rope_freq_scale = 0.0f;  // 0: from the model
    int32_t flash_attn = -1;       // -1: llama.cpp decides, 0: off, 1: on
};

class EmbeddingContext {
public:
    // rank: the model must be a reranker (rank pooling) and outputs are its class
    // scores; otherwise a reranker is refused.
    EmbeddingContext(std::shared_ptr<Model> model, const EmbeddingParams & params, bool rank = false);
    ~EmbeddingContext();
    EmbeddingContext(const EmbeddingContext &) = delete;
    EmbeddingContext & operator=(const EmbeddingContext &) = delete;

    // One unit-length vector per text, in order. Texts are tokenized with the
    // model's special tokens ([CLS] ... [SEP] for BERT) and packed into as few
    // llama_decode calls as n_batch and n_seq_max allow. A text longer than n_ctx
    // tokens raises InvalidArgument before any work is done (no truncation).
    std::vector<std::vector<float>> embed(const std::vector<std::string> & texts);
    std::vector<std::vector<float>> embed_tokens(const std::vector<std::vector<llama_token>> & seqs);

    // Frees the context; later calls raise ModelUnloaded.
    void close();

    int32_t n_ctx() const { return n_ctx_; }
    int32_t n_batch() const { return n_batch_; }
    int32_t n_seq_max() const { return n_seq_max_; }
    int32_t n_embd() const { return n_embd_; }  // floats per output (a reranker: its classes)
    int32_t n_threads() const { return n_threads_; }
    std::string pooling() const;
    uint64_t decode_calls() const { return decode_calls_; }
    const std::shared_ptr<Model> & model() const { return model_; }

private:
    void decode_group(const std::vector<std::vector<llama_token>> & seqs, size_t first, size_t count,
                      std::vector<std::vector<float>> & out);

    std::shared_ptr<Model> model_;
    llama_context * ctx_ = nullptr;
    ggml_threadpool * threadpool_ = nullptr;
    llama_batch batch_{};
    std::mutex mu_;
    int32_t n_ctx_ = 0;
    int32_t n_batch_ = 0;
    int32_t n_seq_max_ = 0;
    int32_t pack_tokens_ = 0;  // params.pack_tokens, at most n_batch_
    int32_t n_embd_ = 0;
    int32_t n_threads_ = 0;
    enum llama_pooling_type pooling_ = LLAMA_POOLING_TYPE_UNSPECIFIED;
    uint64_t decode_calls_ = 0;
    bool rank_ = false;
};

}  // namespace lmfast
