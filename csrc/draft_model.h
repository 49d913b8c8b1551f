// Speculative decoding with a draft model (the SDK's draftModel): a smaller model sharing the
// target's vocabulary proposes the next tokens greedily, and the engine verifies them in the
// target's batch exactly as it verifies n-gram drafts (Engine::verify_draft), so the output is
// the target's own.
//
// The draft has its own llama_context, one sequence per target sequence (same ids), in one
// unified KV cache of the target's window: memory for one window whatever the number of
// sequences. Each sequence remembers the tokens its cells hold; a draft starts by keeping the
// longest common prefix with the target's tokens and evaluating the rest, so cells of rejected
// drafts (and everything after a context shift) leave there. When the cache is full, the
// other sequences' cells leave (they are re-evaluated if those requests draft again).
// Used by one engine's thread only, after construction.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"
#include "model.h"

namespace lmfast {

// Why a draft model cannot draft for a target, by llama.cpp's rules (common/speculative.cpp:
// vocabulary type, BOS and EOS, sizes within 128, the texts of tokens from id 5 on); "" when it can.
std::string draft_incompatibility(const Model & target, const Model & draft);

class DraftModel {
public:
    // Throws InvalidArgument when the vocabularies are incompatible; n_ctx and n_seq: the
    // target engine's window and sequences.
    DraftModel(std::shared_ptr<Model> draft, const Model & target, int32_t n_ctx, int32_t n_seq, int32_t n_threads);
    ~DraftModel();
    DraftModel(const DraftModel &) = delete;
    DraftModel & operator=(const DraftModel &) = delete;

    // Up to n greedy tokens to follow `history` + `next` in sequence `seq`; fewer where the
    // draft's window ends, where it gives its choice less than p_min probability (among its 10
    // likeliest tokens, as llama.cpp's draft sampler does), or none when its decode fails.
    // Token ids are below n_vocab_target.
    std::vector<llama_token> draft(llama_seq_id seq, const std::vector<llama_token> & history, llama_token next,
                                   int32_t n, int32_t n_vocab_target, float p_min = 0.0f);
    llama_context * context() const { return ctx_; }
    const std::shared_ptr<Model> & model() const { return model_; }
    // Seconds one greedy draft token takes (a running estimate; 0 until measured): the engine
    // weighs a draft's length against it.
    double sec_per_token() const { return sec_per_token_; }

private:
    bool sync(llama_seq_id seq, const std::vector<llama_token> & want);
    bool decode(llama_seq_id seq, const llama_token * tokens, int32_t n, llama_pos pos0);
    // The likeliest next token and (with_p) its probability among the 10 likeliest; 1 without.
    std::pair<llama_token, float> top(bool with_p) const;

    std::shared_ptr<Model> model_;
    llama_context * ctx_ = nullptr;
    llama_batch batch_{};
    int32_t n_ctx_ = 0, n_batch_ = 0;
    std::vector<std::vector<llama_token>> held_;  // per sequence: the tokens its cells hold
    double sec_per_token_ = 0;
};

}  // namespace lmfast
