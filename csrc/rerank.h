// Rerankers: cross-encoders with llama.cpp's rank pooling (BERT/XLM-R with a classifier head,
// Qwen3 rerankers). Each (query, document) pair becomes one sequence, built the way
// llama-server's /rerank builds it, and the documents of one call are encoded as sequences
// of as few llama_decode calls as the batch allows (EmbeddingContext does the packing).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "embedding.h"

namespace lmfast {

struct RerankScores {
    std::vector<float> scores;  // one per document, in the documents' order
    int64_t n_tokens = 0;       // tokens evaluated, all pairs together
};

class RerankContext {
public:
    RerankContext(std::shared_ptr<Model> model, const EmbeddingParams & params);

    // The tokens of one pair: the GGUF's "rerank" template with {query} and {document} filled
    // in where it has one (Qwen3 rerankers), else [BOS] query [EOS] [SEP] document [EOS] with
    // each special token where the vocabulary asks for it ([CLS] q [SEP] d [SEP] for BERT).
    std::vector<llama_token> pair_tokens(const std::string & query, const std::string & document) const;

    // The relevance score (the classifier's first output) of each document for the query. A pair
    // longer than the context raises InvalidArgument before any work is done.
    RerankScores score(const std::string & query, const std::vector<std::string> & documents);

    void close() { ctx_.close(); }
    int32_t n_ctx() const { return ctx_.n_ctx(); }
    int32_t n_batch() const { return ctx_.n_batch(); }
    int32_t n_seq_max() const { return ctx_.n_seq_max(); }
    int32_t n_threads() const { return ctx_.n_threads(); }
    uint64_t decode_calls() const { return ctx_.decode_calls(); }
    const std::shared_ptr<Model> & model() const { return ctx_.model(); }

private:
    EmbeddingContext ctx_;
    std::string template_;  // the GGUF's rerank template, empty without one
};

}  // namespace lmfast
