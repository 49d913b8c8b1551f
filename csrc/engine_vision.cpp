// The engine's part of prompts with images (vision.h): queuing one, and evaluating its chunks at
// admission. Simplification: the chunks before the prompt's last text run are evaluated there,
// alone, on the engine thread (other requests wait for that step); the last text run then joins
// the batch like any prompt's, so decoding batches with text requests.
#include <algorithm>
#include <mutex>

#include "engine.h"
#include "errors.h"
#include "mtmd-helper.h"
#include "mtmd.h"
#include "vision.h"

namespace lmfast {

// Some projectors' image embeddings attend to each other both ways (Gemma 3's:
// mtmd_decode_use_non_causal), so an image must be evaluated in one micro-batch: llama.cpp
// asserts (aborting the process) on a non-causal batch larger than n_ubatch, and one split over
// several llama_decode calls (n_batch) would not be the image llama-mtmd-cli evaluates.
void Engine::check_non_causal_images(const VisionPrompt & prompt) const {
    const size_t room = static_cast<size_t>(std::min(params_.n_ubatch, params_.n_batch));
    for (const auto & s : prompt.spans) {
        if (!s.image || s.n <= room || !mtmd_decode_use_non_causal(prompt.vision->ctx(), s.chunk)) continue;
        const std::string what = "an image of this chat takes " + std::to_string(s.n) +
                                 " tokens, which this projector evaluates with non-causal attention in one "
                                 "micro-batch, and the model's micro-batch holds " + std::to_string(room) +
                                 " tokens";
        // A micro-batch smaller than the batch is lmfast's cap (config.py's MICRO_BATCH_TOKENS).
        if (params_.n_ubatch < params_.n_batch) {
            throw InvalidArgument(what + " (lmfast's largest): this projector cannot take images this large");
        }
        throw InvalidArgument(what + " (evalBatchSize): load the model with evalBatchSize " + std::to_string(s.n) +
                              " or more");
    }
}

std::shared_ptr<Request> Engine::submit_vision(std::shared_ptr<const VisionPrompt> prompt, GenerationParams params,
                                               bool stream) {
    if (!prompt) throw InvalidArgument("no prompt");
    if (prompt->vision->model().get() != model_.get()) {
        throw InvalidArgument("the image prompt was made for another model's projector");
    }
    // The placeholders of an image must never be cut (truncateMiddle) or evaluated as text.
    if (static_cast<int64_t>(prompt->tokens.size()) >= n_ctx_) {
        throw InvalidArgument("the prompt with its images has " + std::to_string(prompt->tokens.size()) +
                              " tokens (" + std::to_string(prompt->n_image_tokens) +
                              " of them for images), which does not fit the context length of " +
                              std::to_string(n_ctx_) + " tokens: send fewer or smaller images, or load the model "
                              "with a larger contextLength");
    }
    check_non_causal_images(*prompt);
    auto req = make_request(prompt->tokens, std::move(params), stream);
    req->vision_ = std::move(prompt);
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) throw ModelUnloaded("the model has been unloaded");
        queue_.push_back(req);
        counters_.requests += 1;
        in_flight_ += 1;
    }
    cv_.notify_all();
    return req;
}

// After admission found how much of the prompt sequence `seq` holds (n_done): an image
// only partly held is evaluated again whole; every chunk from there up to the last text run is
// evaluated here, each as llama-mtmd-cli does (mtmd_helper_eval_chunk_single, which also turns
// on non-causal attention for the image chunks of projectors that want it, Gemma 3's), and its
// tokens (placeholders for images) join the sequence's token list. Returns the prompt tokens the
// sequence now holds (fewer when the request was cancelled on the way).
size_t Engine::eval_vision_prefix(const Request & req, llama_seq_id seq, size_t n_done) {
    const VisionPrompt & vp = *req.vision_;
    auto & toks = cache_.tokens(seq);
    size_t done = n_done;
    for (const auto & s : vp.spans) {
        if (s.image && s.begin < done && done < s.begin + s.n) done = s.begin;
    }
    llama_memory_t mem = llama_get_memory(ctx_);
    if (done < toks.size()) {
        if (!llama_memory_seq_rm(mem, seq, static_cast<llama_pos>(done), -1)) {
            llama_memory_seq_rm(mem, seq, -1, -1);
            done = 0;
        }
        toks.resize(done);
    }
    const size_t last = vp.spans.back().begin;
    uint64_t n_encoded = 0, n_evaluated = 0;
    std::lock_guard<std::mutex> lk(vp.vision->mu());
    for (const auto & s : vp.spans) {
        if (s.begin + s.n <= done || s.begin >= last) continue;
        // Cancelled between chunks: what is evaluated stays in the sequence (and its cache
        // entry); the request ends as userStopped at the next step (drop_cancelled), before any
        // of the rest is evaluated (it used to fail the request: an error for a user's stop).
        if (req.cancelled()) break;
        if (s.image) {
            llama_pos n_past = static_cast<llama_pos>(done);
            if (mtmd_helper_eval_chunk_single(vp.vision->ctx(), ctx_, s.chunk, n_past, seq, params_.n_batch, false,
                                              &n_past) != 0) {
                throw std::runtime_error("libmtmd could not encode or evaluate an image");
            }
            ++n_encoded;
        } else {
            // A text run partly held: only its tail is evaluated.
            for (size_t i = done; i < s.begin + s.n;) {
                batch_.n_tokens = 0;
                for (; i < s.begin + s.n && batch_.n_tokens < params_.n_batch; ++i) {
                    batch_add(vp.tokens[i], static_cast<llama_pos>(i), seq, false);
                }
                if (llama_decode(ctx_, batch_) != 0) throw std::runtime_error("llama_decode failed on a prompt's text");
            }
        }
        n_evaluated += s.begin + s.n - done;
        toks.insert(toks.end(), vp.tokens.begin() + static_cast<std::ptrdiff_t>(done),
                    vp.tokens.begin() + static_cast<std::ptrdiff_t>(s.begin + s.n));
        done = s.begin + s.n;
    }
    batch_.n_tokens = 0;
    std::lock_guard<std::mutex> lk2(mu_);
    counters_.images_encoded += n_encoded;
    counters_.prompt_tokens_evaluated += n_evaluated;
    return done;
}

}  // namespace lmfast
