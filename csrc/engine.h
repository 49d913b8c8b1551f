// One engine per loaded model instance: a llama_context with several sequences,
// a request queue, and one scheduler thread that owns the context. Every step it
// puts the next token of each generating request and prompt chunks of new ones
// into a single batch (continuous batching), samples, detokenizes, matches stop
// strings, and hands finished text to the requests' consumers. llama_decode is
// only ever called from that thread.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cpu_share.h"
#include "detokenizer.h"
#include "disk_cache.h"
#include "draft_model.h"
#include "errors.h"
#include "lora.h"
#include "model.h"
#include "prefix_cache.h"
#include "draft_length.h"
#include "speculation.h"
#include "sampling.h"
#include "spill_cache.h"
#include "thread_pools.h"
#include "tool_calls.h"

namespace lmfast {

enum class StopReason { None, EosFound, MaxTokens, StopString, UserStopped, ContextLength, Failed, ModelUnloaded };
const char * stop_reason_name(StopReason r);  // LM Studio's names, e.g. "eosFound"

// What happens when a request does not fit the context window (the SDK's
// contextOverflowPolicy). See Engine::submit and Engine::shift for the rules.
enum class ContextOverflow { StopAtLimit, TruncateMiddle, RollingWindow };
ContextOverflow parse_context_overflow(const std::string & name);  // "stopAtLimit", ...
const char * context_overflow_name(ContextOverflow policy);

struct ChatFormat;  // chat_prompt.h
struct ChatPrompt;  // chat_prompt.h
struct VisionPrompt;  // vision.h

struct GenerationParams {
    SamplingParams sampling;
    int32_t max_tokens = -1;  // < 0: until EOS or the context is full
    std::vector<std::string> stop_strings;
    bool ignore_eos = false;
    ContextOverflow overflow = ContextOverflow::StopAtLimit;
    // Control tokens whose text goes into the output (a tool-call format's "<tool_call>"), where
    // other control tokens give none.
    std::vector<llama_token> preserved_tokens;
    // CPU threads for the steps this request is in (the SDK's per-prediction cpuThreads);
    // 0: the engine's. At most the engine's pool size (Engine::submit checks).
    int32_t n_threads = 0;
    // A chat's tool-call format (apply_chat_format): the request's output is parsed with it,
    // and its call markers are kept out of the streamed text (CallFilter).
    std::shared_ptr<const ChatFormat> chat_format;
    // Speculative decoding by n-gram lookup (speculation.h): drafts of at most draft_max tokens
    // a step, those shorter than draft_min not used. 0: off.
    int32_t draft_max = 0;
    int32_t draft_min = 0;
    // With a draft model (draft_model.h) the drafts come from it instead of the n-gram lookup.
    // It belongs to this engine's instance: only this engine's thread uses it.
    std::shared_ptr<DraftModel> draft_model;
    // A draft model stops drafting at a token it gives less than this probability (among its 10
    // likeliest, as llama.cpp's speculative sampler computes it; its default); 0: never.
    float draft_p_min = 0.75f;
    // Log-probabilities of the sampled tokens (sampling.h token_logprob), each with this many
    // most likely alternatives; < 0: off (no work per token).
    int32_t logprobs = -1;
    // LoRA scales for this request, (adapter id, scale), as llama-server's per-request `lora`;
    // adapters not named keep the engine's default scale (Engine::set_lora_defaults). 0 turns
    // one off. The engine decodes requests of different settings in separate steps.
    std::vector<std::pair<int32_t, float>> lora_scales;
};

struct RequestStats {
    int32_t prompt_tokens = 0;     // tokens in the prompt
    int32_t cached_tokens = 0;     // of those, taken from the KV cache (not evaluated)
    int32_t restored_tokens = 0;   // of those, restored from the host tier (spill_cache.h; not evaluated)
    int32_t predicted_tokens = 0;  // sampled tokens, the end-of-generation token excluded
    double time_to_first_token = 0;  // seconds from submission to the first sampled token
    double prompt_eval_time = 0;     // seconds spent from admission to the first token
    double generation_time = 0;      // seconds from the first token to the end
    double queue_time = 0;           // seconds waiting for a free sequence
    StopReason stop_reason = StopReason::None;
    int32_t prompt_tokens_dropped = 0;  // cut from an overlong prompt (truncateMiddle, rollingWindow)
    int32_t context_shifts = 0;         // times the window was shifted during generation
    int32_t n_threads = 0;              // the most CPU threads a step of this request ran with
    // Speculative decoding: tokens drafted, of those verified equal to the target's choice,
    // the first that was not (one per draft at most), and never verified (after a rejection
    // or the end of the request, or dropped before decoding): drafted = the other three.
    int32_t draft_tokens = 0, accepted_draft_tokens = 0, rejected_draft_tokens = 0, ignored_draft_tokens = 0;
    std::string error;
    std::vector<llama_token> tokens;  // generated token ids
};

class Request {
public:
    Request(std::vector<llama_token> prompt, GenerationParams params, bool stream);

    // Consumer side (any thread). Waits at most `timeout` for streamed text.
    // Returns true when it moved `out` text, a tool call being written grew (`out` may then be
    // empty: see take_call_deltas) or the request is done.
    // `n_tokens` gets the number of sampled tokens the text came from.
    bool wait_text(std::string & out, int32_t & n_tokens, std::chrono::milliseconds timeout);
    bool wait_done(std::chrono::milliseconds timeout);
    bool done() const;
    void cancel() { cancelled_.store(true); }
    bool cancelled() const { return cancelled_.load(); }
    // Share of the prompt in the KV cache (taken from it, or evaluated so far): 0 .. 1.
    float prompt_progress() const {
        return static_cast<float>(prompt_done_.load()) / static_cast<float>(std::max<size_t>(1, prompt_.size()));
    }
    // Valid once done().
    const RequestStats & stats() const { return stats_; }
    const std::string & text() const { return text_; }  // all text, tool calls included
    const std::shared_ptr<const ChatFormat> & chat_format() const { return params_.chat_format; }
    // The log-probabilities of the tokens sampled since the last call (GenerationParams::logprobs;
    // empty when off). A streamed fragment's tokens are among those sampled before it was taken.
    std::vector<TokenLogprob> take_logprobs();
    // Whether the text that wait_text moved last holds a token a draft had guessed (accepted
    // draft tokens: the SDK fragment's containsDrafted). Consumer thread only.
    bool last_text_drafted() const { return last_drafted_; }
    // Streamed requests with a tool-call format: what the calls being written gained since the
    // last call (tool_calls.h CallStreamer), parsed on the caller's thread. Empty outside calls.
    std::vector<ToolCallDelta> take_call_deltas();

private:
    friend class Engine;
    void emit(const std::string & text, int32_t n_tokens, bool drafted = false);
    void finish(StopReason reason, const std::string & error = std::string());

    const std::vector<llama_token> prompt_;  // after truncation: what goes into the window
    const GenerationParams params_;
    int32_t n_keep_ = 0;  // head tokens a context shift keeps (set by Engine::submit)
    bool held_ = false;   // held back at admission for a shared prefix (engine thread, under its lock)
    SamplerPtr grammar_;  // built (and so checked) at submit; moved to the sequence at admission
    std::vector<float> lora_;  // the full LoRA setting, one scale per adapter (set by Engine::make_request)
    const bool stream_;
    const std::chrono::steady_clock::time_point t_submit_;
    std::atomic<bool> cancelled_{false};
    std::atomic<int32_t> prompt_done_{0};  // prompt tokens in the KV cache (engine thread writes)

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::optional<CallFilter> calls_;  // streamed requests with call markers
    CallStreamer call_streamer_;       // the consumer's (take_call_deltas)
    std::string pending_;  // streamed text not yet taken by the consumer
    int32_t pending_tokens_ = 0;
    bool pending_drafted_ = false;  // pending_ holds an accepted draft token's text
    bool last_drafted_ = false;     // the consumer's: what wait_text took had one
    bool call_grew_ = false;  // text went into a call since the consumer last woke
    std::string text_;     // all text
    std::vector<TokenLogprob> logprobs_;  // one per sampled token when asked for
    size_t logprobs_taken_ = 0;
    // A branch of an n > 1 group (Engine::submit_n): forked from this request's sequence once
    // its prompt is evaluated, instead of evaluating the prompt again.
    std::shared_ptr<Request> fork_of_;
    // A prompt with images (vision.h): prompt_ holds placeholders where images go, and admission
    // evaluates the images themselves (Engine::eval_vision_prefix).
    std::shared_ptr<const VisionPrompt> vision_;
    bool done_ = false;
    RequestStats stats_;
};

// The KV cache types llama.cpp's context takes (those its own --cache-type-k/-v accept),
// by ggml's name for each ("f16", "q8_0", ...) -> ggml_type id.
std::vector<std::pair<std::string, int>> kv_cache_types();

struct EngineParams {
    int32_t n_ctx = 4096;
    int32_t n_batch = 2048;
    int32_t n_ubatch = 512;
    int32_t n_seq = 4;  // KV-cache sequences: concurrent requests and cached conversations
    int32_t n_threads = -1;        // -1: physical cores
    int32_t n_threads_batch = -1;  // -1: same as n_threads
    int32_t flash_attn = -1;       // -1 auto, 0 off, 1 on
    int32_t type_k = -1;           // ggml_type of the K cache; -1: llama.cpp's default (f16)
    int32_t type_v = -1;
    bool offload_kqv = true;
    float rope_freq_base = 0.0f;   // 0: from the model
    float rope_freq_scale = 0.0f;
    int64_t spill_bytes = -1;      // host tier for evicted conversations: -1 auto (MemAvailable / 8,
                                   // at most 4 GiB), 0 off
    std::string disk_dir;          // disk tier (disk_cache.h); empty: off
    std::string disk_identity;     // the model file and KV layout its files must match
    int64_t disk_bytes = 8ll << 30;  // the folder's budget
    std::vector<std::pair<std::string, float>> loras;  // LoRA adapters (path, scale) on every context (lora.h)
};

struct EngineCounters {
    uint64_t requests = 0;
    uint64_t prompt_tokens_evaluated = 0;
    uint64_t prompt_tokens_cached = 0;
    uint64_t tokens_generated = 0;
    uint64_t decode_calls = 0;
    // Steps that decoded generated tokens, and the runs of consecutive sequence ids among them
    // summed over those steps: each run is one llama.cpp micro-batch, one pass over the weights.
    uint64_t generation_steps = 0;
    uint64_t generation_seq_runs = 0;
    // Requests held back at admission until another request had evaluated the prompt prefix
    // they share, which they then copied instead of evaluating it again (Engine::waits).
    uint64_t shared_prefix_waits = 0;
    // The host tier (spill_cache.h): conversations saved there when their sequence was taken,
    // restored from it, and the prompt tokens those restores gave back.
    uint64_t spills = 0;
    uint64_t restores = 0;
    uint64_t prompt_tokens_restored = 0;
    uint64_t spill_bytes = 0;  // held in the tier now
    // The disk tier (disk_cache.h): files written, conversations restored from files, and the
    // bytes of the folder's cache files (all models').
    uint64_t disk_writes = 0;
    uint64_t disk_restores = 0;
    uint64_t disk_bytes = 0;
    uint64_t kv_streams = 0;   // KV streams allocated (one context's worth of cells each)
    uint64_t kv_growths = 0;   // contexts made larger since load (each one a new context)
    uint64_t forked_sequences = 0;  // n > 1 branches that copied their group's evaluated prompt
    uint64_t images_encoded = 0;    // image chunks encoded by the vision projector (not taken from the cache)
    // Steps whose LoRA setting differed from the previous step's (requests of different
    // settings decode in separate steps, taking turns).
    uint64_t lora_switches = 0;
};

class Engine {
public:
    Engine(std::shared_ptr<Model> model, const EngineParams & params);
    ~Engine();
    Engine(const Engine &) = delete;
    Engine & operator=(const Engine &) = delete;

    // Validates and queues a request; the scheduler picks it up at its next step.
    std::shared_ptr<Request> submit(std::vector<llama_token> prompt, GenerationParams params, bool stream);
    // A rendered chat: its tool-call format, if any, applies (apply_chat_format) before its
    // tokens are queued as above.
    std::shared_ptr<Request> submit(const ChatPrompt & prompt, GenerationParams params, bool stream);
    // n completions of one prompt (OpenAI's n): the first request evaluates the prompt; the others
    // copy its sequence once that is done and draw their first token from the same logits, each
    // with its own sampler. A fixed seed s gives branch i the seed s + i. Branches that find no
    // free sequence in time run as ordinary requests (sharing the prefix through the cache).
    std::vector<std::shared_ptr<Request>> submit_n(std::vector<llama_token> prompt, GenerationParams params, int32_t n,
                                                   bool stream);
    std::vector<std::shared_ptr<Request>> submit_n(const ChatPrompt & prompt, GenerationParams params, int32_t n,
                                                   bool stream);
    // A rendered chat with images (vision.h VisionPrompt): its text and image chunks are
    // evaluated at admission, before it joins the batch (engine_vision.cpp).
    std::shared_ptr<Request> submit_vision(std::shared_ptr<const VisionPrompt> prompt, GenerationParams params,
                                           bool stream);
    // Ends the scheduler: running and queued requests finish as "modelUnloaded".
    void shutdown();
    // Seconds since the last request ended (or since the engine started) when nothing is
    // queued or running; 0 while busy. For idle-time (TTL) unloading.
    double idle_seconds() const;

    int32_t n_ctx() const { return n_ctx_; }
    int32_t n_seq() const { return params_.n_seq; }            // the limit
    int32_t n_streams() const { return n_streams_.load(); }    // KV streams allocated now (grow())
    int32_t n_threads() const { return n_threads_; }
    EngineCounters counters() const;
    // For tests and debugging (teacher forcing). Waits until no request runs, then evaluates
    // the token sequences the way requests admitted in the same step are: the first
    // n_prefix[s] tokens of every sequence s in one batch, then one token per sequence per
    // batch. Returns, for each sequence, the logits after each of its tokens from position
    // n_prefix[s] - 1 on ((size - n_prefix[s] + 1) x n_vocab floats). Uses and then empties
    // sequences 0..k-1 (their cached conversations are forgotten).
    std::vector<std::vector<float>> eval_logits(const std::vector<std::vector<llama_token>> & seqs,
                                                const std::vector<int32_t> & n_prefix);
    const std::shared_ptr<Model> & model() const { return model_; }
    // Writes the conversation held by the sequence that starts with `tokens` (all but possibly
    // the last) to the disk tier, waiting for the engine to be idle; returns how many tokens
    // the file holds, 0 when no sequence holds them or there is no disk tier.
    size_t persist(const std::vector<llama_token> & tokens);
    // The LoRA scales a request gets for the adapters it does not name (one per adapter, load
    // order): the load-time scales until set_lora_defaults changes them (llama-server's POST
    // /lora-adapters). Unknown ids and non-finite scales are InvalidArgument.
    std::vector<float> lora_defaults() const;
    void set_lora_defaults(const std::vector<std::pair<int32_t, float>> & scales);
    // Warnings from the cache tiers (a damaged file removed, a folder that cannot be written),
    // each returned once.
    std::vector<std::string> take_warnings();

private:
    struct Active;
    void loop();
    void check_kv_memory(const llama_context_params & cp) const;
    llama_context * create_context(int32_t n_streams) const;
    bool grow(int32_t want);
    void lose_sequence(llama_seq_id s);
    void admit(std::shared_ptr<Request> req);
    size_t eval_vision_prefix(const Request & req, llama_seq_id seq, size_t n_done);
    void check_non_causal_images(const VisionPrompt & prompt) const;  // engine_vision.cpp
    bool waits(const Request & req) const;
    bool copy_pays(size_t n_cells, size_t n_tokens) const;
    int32_t streams_for(size_t n_wanted) const;
    bool restore_pays(size_t bytes, double file_rate, size_t n_tokens) const;
    bool copy_prefix(llama_seq_id src, llama_seq_id dst);
    void spill(llama_seq_id seq, size_t n_kept);
    std::optional<SpillCache::Entry> take_spilled(const std::vector<llama_token> & prompt, size_t keep,
                                                  const std::vector<float> & key);
    size_t restore(llama_seq_id seq, SpillCache::Entry & e, const std::vector<llama_token> & prompt);
    void finish(Active & a, StopReason reason, const std::string & error = std::string());
    Active * active_of(const Request * req);
    void fork_branches(Active & leader);
    std::shared_ptr<Request> make_request(std::vector<llama_token> prompt, GenerationParams params, bool stream);
    void warn(const std::string & message);
    // Runs f on the engine thread between requests and returns its result (or exception).
    template <typename F> auto run_job(F f) -> decltype(f());
    void run_jobs();
    void admit_queued();
    // One scheduler step, in phases: drop_cancelled, decode_batch (build_batch, then decode,
    // retrying without the newest request when the KV cache has no room), commit_and_sample,
    // publish (counters), wake_finished. Counters are published before the requests that
    // finished in the step are woken, so a consumer that returns sees its step counted.
    void step();
    void drop_cancelled();
    bool build_batch();
    void pick_lora_group();
    bool in_step(const Active & a) const;
    void use_lora(const std::vector<float> & setting);
    bool decode_batch();
    void set_step_threads();
    void update_step_costs(std::chrono::steady_clock::time_point t_decode);
    // Appends one token of one sequence to batch_; returns its index in the batch.
    int32_t batch_add(llama_token t, llama_pos pos, llama_seq_id seq, bool logits);
    void commit_and_sample();
    void publish();
    void wake_finished();
    bool sample(Active & a, int32_t i_batch);
    void add_draft(Active & a);
    std::vector<llama_token> model_draft(Active & a, int32_t room, int32_t & ignored);
    double draft_cost_ratio() const;
    double step_cost(int32_t n_tokens) const;
    DraftLength::StepCost draft_cost(int32_t rows, double own) const;
    bool verify_draft(Active & a, bool keep);
    bool shift(Active & a);
    int32_t keep_for(ContextOverflow policy, const std::vector<llama_token> & prompt) const;

    std::shared_ptr<Model> model_;
    EngineParams params_;
    LoraSet loras_;  // after model_: freed before the model, after ctx_ (freed in ~Engine's body)
    llama_context * ctx_ = nullptr;
    ThreadPools pools_;  // compute threads, a pool per thread count in use
    llama_batch batch_{};
    int32_t n_ctx_ = 0;
    int32_t n_threads_ = 0;
    std::unique_ptr<CpuShare> cpu_share_;  // cpuThreads left to lmfast: what other work leaves free
    bool growable_ = false;              // a plain KV cache: grow() may add streams
    std::atomic<int32_t> n_streams_{0};  // KV streams of ctx_ (sequences 0..n_streams_-1); engine thread writes
    double bytes_per_cell_ = 0;          // K and V of one token, all layers (f16 estimate)
    std::vector<uint8_t> state_buf_;     // scratch for copying a sequence's cells
    std::vector<llama_token_data> sample_buf_;  // scratch for constrained sampling
    double prompt_sec_per_token_ = 1e-3; // running estimate, from this engine's own prompt batches
    double decode_step_sec_ = 0;         // running estimate of a one-token step; 0: not measured yet
    // Running estimates of a step's time by its tokens (index) over a one-token step's, drafts'
    // batches among them; 0: not measured yet (step_cost() then prices it from the two above).
    static constexpr int32_t kStepCostRows = 40;
    std::array<double, kStepCostRows> step_rel_{};

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Request>> queue_;
    std::deque<std::function<void()>> jobs_;  // run by the engine thread when no request is active
    bool stop_ = false;
    EngineCounters counters_;
    std::vector<std::string> warnings_;
    std::vector<float> lora_defaults_;  // set_lora_defaults
    std::atomic<int32_t> in_flight_{0};
    std::atomic<int64_t> last_done_ns_{0};  // steady_clock time of the last request's end
    void request_done();

    // Engine thread only.
    PrefixCache cache_;
    SpillCache spill_;
    DiskCache disk_;
    std::list<std::unique_ptr<Active>> active_;
    std::vector<Active *> decoding_;  // step(): the generating requests, in sequence order
    std::vector<float> lora_applied_;  // the LoRA setting ctx_ has now
    std::vector<float> step_lora_;     // step(): the setting of the requests in this step's batch
    bool step_mixed_ = false;          // step(): active requests have different settings
    bool grow_when_idle_ = false;     // a conversation came back from a tier: chats interleave
    uint64_t seq_runs_ = 0;           // step(): runs of consecutive sequence ids in decoding_
    uint64_t step_prompt_tokens_ = 0, step_generated_ = 0, step_decodes_ = 0;  // step(): its work, for publish()
    struct Finished {
        std::shared_ptr<Request> req;
        StopReason reason;
        std::string error;
    };
    std::vector<Finished> finished_;  // ended in this step, woken after publish()
    std::thread thread_;
};

template <typename F> auto Engine::run_job(F f) -> decltype(f()) {
    auto task = std::make_shared<std::packaged_task<decltype(f())()>>(std::move(f));
    auto fut = task->get_future();
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) throw ModelUnloaded("the model has been unloaded");
        jobs_.push_back([task] { (*task)(); });
    }
    cv_.notify_all();
    return fut.get();
}

}  // namespace lmfast
