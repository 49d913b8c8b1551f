#include "engine.h"

#include <algorithm>
#include <optional>
#include <cstdio>
#include <limits>
#include <utility>

#include "chat_prompt.h"
#include "common.h"
#include "errors.h"
#include "seq_state.h"
#include "vision.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

namespace lmfast {

using Clock = std::chrono::steady_clock;

static double seconds(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

const char * stop_reason_name(StopReason r) {
    switch (r) {
        case StopReason::EosFound: return "eosFound";
        case StopReason::MaxTokens: return "maxPredictedTokensReached";
        case StopReason::StopString: return "stopStringFound";
        case StopReason::UserStopped: return "userStopped";
        case StopReason::ContextLength: return "contextLengthReached";
        case StopReason::Failed: return "failed";
        case StopReason::ModelUnloaded: return "modelUnloaded";
        case StopReason::None: break;
    }
    return "none";
}

std::vector<std::pair<std::string, int>> kv_cache_types() {
    static const ggml_type types[] = {GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q8_0,  GGML_TYPE_Q4_0,
                                      GGML_TYPE_Q4_1, GGML_TYPE_IQ4_NL, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1};
    std::vector<std::pair<std::string, int>> out;
    for (ggml_type t : types) out.emplace_back(ggml_type_name(t), static_cast<int>(t));
    return out;
}

const char * context_overflow_name(ContextOverflow policy) {
    switch (policy) {
        case ContextOverflow::TruncateMiddle: return "truncateMiddle";
        case ContextOverflow::RollingWindow: return "rollingWindow";
        default: return "stopAtLimit";
    }
}

ContextOverflow parse_context_overflow(const std::string & name) {
    if (name == "stopAtLimit") return ContextOverflow::StopAtLimit;
    if (name == "truncateMiddle") return ContextOverflow::TruncateMiddle;
    if (name == "rollingWindow") return ContextOverflow::RollingWindow;
    throw InvalidArgument("unknown context overflow policy '" + name +
                          "' (stopAtLimit, truncateMiddle or rollingWindow)");
}

// ---------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------

Request::Request(std::vector<llama_token> prompt, GenerationParams params, bool stream)
    : prompt_(std::move(prompt)), params_(std::move(params)), stream_(stream), t_submit_(Clock::now()) {
    if (stream_ && params_.chat_format && !params_.chat_format->call_markers.empty()) {
        calls_.emplace(params_.chat_format->call_markers);
    }
}

bool Request::wait_text(std::string & out, int32_t & n_tokens, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, timeout, [&] { return done_ || !pending_.empty() || call_grew_; });
    if (!pending_.empty() || call_grew_) {
        call_grew_ = false;
        out.swap(pending_);
        pending_.clear();
        n_tokens = pending_tokens_;
        pending_tokens_ = 0;
        last_drafted_ = pending_drafted_;
        pending_drafted_ = false;
        return true;
    }
    return done_;
}

bool Request::wait_done(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return done_; });
}

bool Request::done() const {
    std::lock_guard<std::mutex> lk(mu_);
    return done_;
}

std::vector<TokenLogprob> Request::take_logprobs() {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<TokenLogprob> out(logprobs_.begin() + static_cast<std::ptrdiff_t>(logprobs_taken_), logprobs_.end());
    logprobs_taken_ = logprobs_.size();
    return out;
}

std::vector<ToolCallDelta> Request::take_call_deltas() {
    std::string text;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!calls_ || !calls_->in_call()) return {};
        text = text_;
    }
    const ChatFormat & f = *params_.chat_format;
    return call_streamer_.look(text, f.parser, f.format, f.generation_prompt);
}

void Request::emit(const std::string & text, int32_t n_tokens, bool drafted) {
    if (text.empty()) return;
    {
        std::lock_guard<std::mutex> lk(mu_);
        text_ += text;
        if (stream_) {
            pending_ += calls_ ? calls_->push(text) : text;
            pending_tokens_ += n_tokens;
            pending_drafted_ = pending_drafted_ || drafted;
            call_grew_ = calls_ && calls_->in_call();
        }
    }
    if (stream_) cv_.notify_all();
}

void Request::finish(StopReason reason, const std::string & error) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (done_) return;
        if (calls_) pending_ += calls_->flush();
        stats_.stop_reason = reason;
        stats_.error = error;
        done_ = true;
    }
    cv_.notify_all();
}

// ---------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------

// A request that holds a sequence. Engine thread only.
struct Engine::Active {
    std::shared_ptr<Request> req;
    llama_seq_id seq = -1;
    SamplerPtr sampler;
    SamplerPtr grammar;  // null when unconstrained
    Utf8Stream utf8;
    StopMatcher stops;
    size_t n_prompt_done = 0;          // prompt tokens in the KV cache
    llama_token next = LLAMA_TOKEN_NULL;  // sampled, to be decoded at the next step
    int32_t i_logits = -1;              // index of this request's output in the current batch
    int32_t n_in_batch = 0;             // tokens this request put into the current batch
    int32_t n_unemitted = 0;            // sampled tokens whose text is still held back
    // Cells [0, n_exact) hold what evaluating the sequence's tokens from scratch would give.
    // A context shift keeps later cells that attended to the tokens it dropped: they are
    // cut off when the request ends, so that the prefix cache only ever reuses exact cells.
    size_t n_exact = SIZE_MAX;
    Clock::time_point t_admit, t_first;
    std::unique_ptr<DraftLength> drafter;  // null unless the request speculates
    std::unique_ptr<NgramLookup> lookup;   // its n-gram cache, when it drafts without a model
    std::vector<llama_token> draft;         // this step's draft, decoded after `next`
    int32_t i_draft = -1;                   // batch index of the draft's first token
    llama_token guess = LLAMA_TOKEN_NULL;   // the draft's token for the next sample(), if any
    bool drafted_unemitted = false;         // held-back text holds an accepted draft token
    Active * fork_from = nullptr;  // an n > 1 branch waiting for this leader's prompt (submit_n)

    explicit Active(std::vector<std::string> stop_strings) : stops(std::move(stop_strings)) {}
    bool in_prompt() const { return n_prompt_done < req->prompt_.size(); }
};

namespace {

// MemAvailable from /proc/meminfo, in bytes; 0 where unknown.
uint64_t mem_available_bytes() {
    FILE * f = std::fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    uint64_t kb = 0;
    while (std::fgets(line, sizeof line, f)) {
        unsigned long long v = 0;
        if (std::sscanf(line, "MemAvailable: %llu kB", &v) == 1) {
            kb = v;
            break;
        }
    }
    std::fclose(f);
    return kb * 1024;
}

}  // namespace

// llama.cpp allocates the whole KV cache when the context is created and clears it, so every
// page is touched at once: a context larger than the free memory gets the process OOM-killed
// (seen with contextLength 10**6 on SmolLM2: ~23 GiB). Estimate the cache first and refuse a
// context whose KV cache alone exceeds the memory available. Only for caches in host memory.
void Engine::check_kv_memory(const llama_context_params & cp) const {
    if (cp.offload_kqv && llama_supports_gpu_offload()) return;
    const llama_model * mdl = model_->get();
    const double n_layer = llama_model_n_layer(mdl);
    const double n_head = std::max(1, llama_model_n_head(mdl));
    const double n_head_kv = std::max(0, llama_model_n_head_kv(mdl));
    const double head_dim = static_cast<double>(llama_model_n_embd(mdl)) / n_head;
    auto bytes_per = [](ggml_type t) {
        return static_cast<double>(ggml_type_size(t)) / std::max<int64_t>(1, ggml_blck_size(t));
    };
    const double kv = static_cast<double>(cp.n_ctx) * n_layer * n_head_kv * head_dim * (bytes_per(cp.type_k) + bytes_per(cp.type_v));
    const uint64_t avail = mem_available_bytes();
    if (avail > 0 && kv > static_cast<double>(avail)) {
        char msg[512];
        std::snprintf(msg, sizeof msg,
                      "a context of %d tokens x %d sequence(s) needs about %.1f GiB for its KV cache, but only "
                      "%.1f GiB of memory is available: lower contextLength or maxParallelPredictions",
                      params_.n_ctx, static_cast<int>(cp.n_seq_max), kv / (1u << 30), static_cast<double>(avail) / (1u << 30));
        throw ModelLoadError(msg);
    }
}

// The host tier's default budget: an eighth of the memory available at load, at most 4 GiB.
static size_t spill_budget(int64_t asked) {
    if (asked >= 0) return static_cast<size_t>(asked);
    return static_cast<size_t>(std::min<uint64_t>(mem_available_bytes() / 8, 4ull << 30));
}

Engine::Engine(std::shared_ptr<Model> model, const EngineParams & params)
    : model_(std::move(model)),
      params_(params),
      cache_(1),
      spill_(spill_budget(params.spill_bytes)),
      disk_(params.disk_dir, params.disk_identity, static_cast<uint64_t>(std::max<int64_t>(0, params.disk_bytes)),
            [this](const std::string & m) { warn(m); }) {
    if (params_.n_seq < 1 || params_.n_seq > 256) throw InvalidArgument("the number of parallel sequences must be 1..256");
    if (params_.n_ctx < 16) throw InvalidArgument("context length must be at least 16 tokens");
    if (params_.n_batch < 1 || params_.n_ubatch < 1) throw InvalidArgument("batch sizes must be positive");
    if (static_cast<uint64_t>(params_.n_ctx) * static_cast<uint64_t>(params_.n_seq) > (1ull << 31)) {
        throw InvalidArgument("context length " + std::to_string(params_.n_ctx) + " x " + std::to_string(params_.n_seq) +
                              " parallel sequences is too large (at most 2^31 cells)");
    }
    n_threads_ = params_.n_threads > 0 ? params_.n_threads : std::max(1, common_cpu_get_num_math());
    const int32_t n_threads_batch = params_.n_threads_batch > 0 ? params_.n_threads_batch : n_threads_;
    // KV memory by use: one stream to start with; grow() adds streams, up to n_seq, when
    // concurrent requests or more cached conversations need them. Only a plain KV cache can
    // move its sequences to a larger context (seq_state.h); other memories get every stream
    // at load, as before.
    const llama_model * mdl = model_->get();
    growable_ = !llama_model_is_recurrent(mdl) && !llama_model_is_hybrid(mdl) && llama_model_n_swa(mdl) == 0;
    const int32_t n_initial = growable_ ? 1 : params_.n_seq;
    loras_ = LoraSet(model_->get(), params_.loras);
    lora_defaults_ = lora_applied_ = step_lora_ = loras_.scales();
    ctx_ = create_context(n_initial);
    n_streams_ = n_initial;
    cache_.grow(n_initial);
    // llama.cpp pads each stream (to 256 cells); the window a request may use is
    // still the context length that was asked for.
    n_ctx_ = std::min<int32_t>(params_.n_ctx, static_cast<int32_t>(llama_n_ctx_seq(ctx_)));
    {
        const double head_dim = static_cast<double>(llama_model_n_embd(mdl)) / std::max(1, llama_model_n_head(mdl));
        bytes_per_cell_ = 2.0 * llama_model_n_layer(mdl) * llama_model_n_head_kv(mdl) * head_dim * 2.0;
    }
    pools_.use(ctx_, n_threads_, n_threads_batch);
    if (params_.n_threads <= 0) cpu_share_ = std::make_unique<CpuShare>(n_threads_);
    counters_.kv_streams = static_cast<uint64_t>(n_initial);
    counters_.disk_bytes = disk_.bytes();
    batch_ = llama_batch_init(params_.n_batch, 0, 1);
    last_done_ns_.store(Clock::now().time_since_epoch().count());
    thread_ = std::thread([this] { loop(); });
}

// A context with n_streams KV streams of n_ctx cells each. One stream per sequence: a token
// attends only to its own conversation's cells. (A unified cache shares cells between
// sequences, but then every token pays attention over every cached conversation: decoding was
// 25-30 % slower with a few long conversations cached.)
llama_context * Engine::create_context(int32_t n_streams) const {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(params_.n_ctx) * static_cast<uint32_t>(n_streams);
    cp.n_batch = params_.n_batch;
    cp.n_ubatch = std::min(params_.n_ubatch, params_.n_batch);
    cp.n_seq_max = n_streams;
    cp.n_threads = n_threads_;
    cp.n_threads_batch = params_.n_threads_batch > 0 ? params_.n_threads_batch : n_threads_;
    cp.flash_attn_type = params_.flash_attn < 0 ? LLAMA_FLASH_ATTN_TYPE_AUTO
                         : params_.flash_attn == 0 ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                   : LLAMA_FLASH_ATTN_TYPE_ENABLED;
    if (params_.type_k >= 0) cp.type_k = static_cast<ggml_type>(params_.type_k);
    if (params_.type_v >= 0) cp.type_v = static_cast<ggml_type>(params_.type_v);
    cp.offload_kqv = params_.offload_kqv;
    cp.rope_freq_base = params_.rope_freq_base;
    cp.rope_freq_scale = params_.rope_freq_scale;
    cp.kv_unified = false;
    cp.no_perf = true;
    check_kv_memory(cp);
    llama_context * ctx = llama_init_from_model(model_->get(), cp);
    if (!ctx) {
        throw ModelLoadError("could not create a llama.cpp context of " + std::to_string(params_.n_ctx) + " tokens x " +
                             std::to_string(n_streams) + " sequence(s) (out of memory, or an unsupported setting "
                             "such as a quantized V cache without flash attention)");
    }
    loras_.apply(ctx);
    return ctx;
}

// Gives the engine `want` KV streams (at most n_seq). Every cached sequence's cells (busy ones
// too: this runs between steps, where no logits are pending) are saved to host memory with the
// sequence-state API, the old context is freed, and a context with more streams is made and
// given the cells back. Freeing first keeps the peak at the new context plus the cells in use:
// making the new one beside the old one peaked at both (SmolLM2 at 4096 tokens growing 2 -> 4
// streams: 564 MB of KV at once against 376 MB). When the larger context cannot be made, one
// with the old stream count is made again and false is returned (requests then wait, or spill
// a conversation, as before).
bool Engine::grow(int32_t want) {
    want = std::min(want, params_.n_seq);
    if (!growable_ || want <= n_streams_) return false;
    std::vector<std::pair<llama_seq_id, std::vector<uint8_t>>> saved;
    for (llama_seq_id s = 0; s < n_streams_; ++s) {
        if (cache_.tokens(s).empty()) continue;
        std::vector<uint8_t> state(llama_state_seq_get_size(ctx_, s));
        if (llama_state_seq_get_data(ctx_, state.data(), state.size(), s) == state.size()) {
            saved.emplace_back(s, std::move(state));
        } else {
            lose_sequence(s);
        }
    }
    llama_free(ctx_);
    ctx_ = nullptr;
    int32_t got = want;
    try {
        ctx_ = create_context(want);
    } catch (const std::exception &) {
        got = n_streams_;
        try {
            ctx_ = create_context(got);  // what held these cells a moment ago
        } catch (const std::exception & e) {
            // The memory went elsewhere meanwhile: this engine cannot run any more. Its
            // requests fail, later ones are refused as after an unload, the process lives.
            for (auto & a : active_) finish(*a, StopReason::Failed, std::string("the KV cache was lost: ") + e.what());
            active_.clear();
            wake_finished();
            std::lock_guard<std::mutex> lk(mu_);
            stop_ = true;
            return false;
        }
    }
    pools_.attach(ctx_);
    lora_applied_ = loras_.scales();  // create_context set the load-time setting
    for (auto & [s, state] : saved) {
        std::vector<uint8_t> moved;
        if (!restream_seq_state(state, static_cast<uint32_t>(got), moved) ||
            llama_state_seq_set_data(ctx_, moved.data(), moved.size(), s) != moved.size()) {
            lose_sequence(s);
        }
    }
    if (got == n_streams_) return false;
    n_streams_ = got;
    cache_.grow(got);
    std::lock_guard<std::mutex> lk(mu_);
    counters_.kv_streams = static_cast<uint64_t>(got);
    counters_.kv_growths += 1;
    return true;
}

// A sequence whose cells could not be moved: its cache is forgotten, and a request running on
// it fails (alone).
void Engine::lose_sequence(llama_seq_id s) {
    cache_.tokens(s).clear();
    for (auto it = active_.begin(); it != active_.end(); ++it) {
        if ((*it)->seq != s) continue;
        finish(**it, StopReason::Failed, "the KV cache could not be moved to a larger context");
        active_.erase(it);
        wake_finished();
        return;
    }
}

Engine::~Engine() {
    shutdown();
    llama_batch_free(batch_);
    if (ctx_) llama_free(ctx_);
}

EngineCounters Engine::counters() const {
    std::lock_guard<std::mutex> lk(mu_);
    return counters_;
}

// Head tokens that a context shift (and the truncation of an overlong prompt) keeps:
// - truncateMiddle: the start of the prompt, where the system prompt and the first
//   messages are, up to a quarter of the window: min(prompt length, n_ctx / 4);
// - rollingWindow: nothing but the BOS token, when the model adds one;
// - stopAtLimit: never shifts.
int32_t Engine::keep_for(ContextOverflow policy, const std::vector<llama_token> & prompt) const {
    const llama_vocab * vocab = model_->vocab();
    const int32_t bos = llama_vocab_get_add_bos(vocab) && prompt[0] == llama_vocab_bos(vocab) ? 1 : 0;
    switch (policy) {
        case ContextOverflow::TruncateMiddle:
            return std::max(bos, std::min(static_cast<int32_t>(prompt.size()), n_ctx_ / 4));
        case ContextOverflow::RollingWindow: return bos;
        case ContextOverflow::StopAtLimit: break;
    }
    return 0;
}

std::shared_ptr<Request> Engine::submit(const ChatPrompt & prompt, GenerationParams params, bool stream) {
    apply_chat_format(prompt.format, params);
    return submit(prompt.tokens, std::move(params), stream);
}

std::shared_ptr<Request> Engine::submit(std::vector<llama_token> prompt, GenerationParams params, bool stream) {
    return submit_n(std::move(prompt), std::move(params), 1, stream).front();
}

std::vector<std::shared_ptr<Request>> Engine::submit_n(const ChatPrompt & prompt, GenerationParams params, int32_t n,
                                                       bool stream) {
    apply_chat_format(prompt.format, params);
    return submit_n(prompt.tokens, std::move(params), n, stream);
}

// Branch i's seed: the group's seed + i (skipping LLAMA_DEFAULT_SEED, which means "random"), or
// a random one of its own.
static uint32_t branch_seed(uint32_t seed, int32_t i) {
    if (seed == LLAMA_DEFAULT_SEED || i == 0) return seed;
    const uint32_t s = seed + static_cast<uint32_t>(i);
    return s == LLAMA_DEFAULT_SEED ? 0u : s;
}

std::vector<std::shared_ptr<Request>> Engine::submit_n(std::vector<llama_token> prompt, GenerationParams params,
                                                       int32_t n, bool stream) {
    if (n < 1 || n > 128) throw InvalidArgument("n (completions of one prompt) must be 1..128");
    std::vector<std::shared_ptr<Request>> group;
    for (int32_t i = 0; i < n; ++i) {
        GenerationParams p = params;
        p.sampling.seed = branch_seed(params.sampling.seed, i);
        group.push_back(make_request(prompt, std::move(p), stream));
        if (i > 0) group.back()->fork_of_ = group.front();
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) throw ModelUnloaded("the model has been unloaded");
        for (auto & r : group) queue_.push_back(r);
        counters_.requests += static_cast<uint64_t>(n);
        in_flight_ += n;
    }
    cv_.notify_all();
    return group;
}

// A checked request, not queued yet.
std::shared_ptr<Request> Engine::make_request(std::vector<llama_token> prompt, GenerationParams params, bool stream) {
    if (prompt.empty()) throw InvalidArgument("the prompt is empty (no tokens)");
    model_->check_tokens(prompt);
    const int32_t n_keep = keep_for(params.overflow, prompt);
    int32_t n_dropped = 0;
    if (static_cast<int64_t>(prompt.size()) >= n_ctx_) {
        if (params.overflow == ContextOverflow::StopAtLimit) {
            throw InvalidArgument("the prompt has " + std::to_string(prompt.size()) +
                                  " tokens, which does not fit the context length of " + std::to_string(n_ctx_) +
                                  " tokens: shorten it, load the model with a larger contextLength, or set "
                                  "contextOverflowPolicy to 'truncateMiddle' or 'rollingWindow'");
        }
        // Keep the head (keep_for) and the most recent tokens, leaving a quarter of the
        // window free for the response: n_keep + n_tail = n_ctx - n_ctx / 4.
        const size_t n_tail = static_cast<size_t>(n_ctx_ - n_ctx_ / 4 - n_keep);
        n_dropped = static_cast<int32_t>(prompt.size() - n_keep - n_tail);
        prompt.erase(prompt.begin() + n_keep, prompt.begin() + n_keep + n_dropped);
    }
    validate(params.sampling);
    if (params.logprobs > 20) throw InvalidArgument("top log-probabilities: at most 20 per token");
    if (params.n_threads < 0 || params.n_threads > n_threads_) {
        throw InvalidArgument("cpuThreads " + std::to_string(params.n_threads) + " for a prediction: this instance's "
                              "thread pool has " + std::to_string(n_threads_) +
                              " threads (its load config's cpuThreads); ask for 1.." + std::to_string(n_threads_));
    }
    // Built here, so that a bad grammar is the caller's error rather than a failed request, and
    // kept for admission, so that it is parsed once.
    SamplerPtr grammar = make_grammar(params.sampling, model_->vocab());
    std::vector<float> lora = loras_.with(lora_defaults(), params.lora_scales);
    auto req = std::make_shared<Request>(std::move(prompt), std::move(params), stream);
    req->grammar_ = std::move(grammar);
    req->lora_ = std::move(lora);
    req->n_keep_ = n_keep;
    req->stats_.prompt_tokens_dropped = n_dropped;
    return req;
}

void Engine::shutdown() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_ && !thread_.joinable()) return;
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Engine::loop() {
    for (;;) {
        // Straight to the limit: each growth makes a whole new context (3-15 ms at SmolLM2's
        // 4096 tokens, benchmarks/kv_growth.py), paid by whichever request comes next. In host
        // memory the streams cost address space until cells are written (csrc/lazy_clear.cpp),
        // so the limit costs no more than the conversations.
        if (grow_when_idle_ && active_.empty()) {
            grow_when_idle_ = false;
            grow(params_.n_seq);
        }
        {
            std::unique_lock<std::mutex> lk(mu_);
            const auto ready = [&] { return stop_ || !queue_.empty() || !active_.empty() || !jobs_.empty(); };
            if (!ready()) {
                // Idle: without a pause the workers would poll on for ggml's 6.5 M rounds after
                // the last graph, 0.15-0.19 s of a core after every request (measured on 2 cores),
                // taken from whatever the machine does next. Waking them costs one broadcast.
                pools_.idle();
                cv_.wait(lk, ready);
            }
            if (stop_) break;
        }
        run_jobs();
        admit_queued();
        if (!ctx_) break;  // grow() lost the context
        try {
            step();
        } catch (const std::exception & e) {
            for (auto & a : active_) finish(*a, StopReason::Failed, e.what());
            active_.clear();
            wake_finished();
        }
    }
    // Unloaded: nothing runs any more; tell every consumer.
    for (auto & a : active_) a->req->finish(StopReason::ModelUnloaded, "the model was unloaded during the prediction");
    active_.clear();
    std::deque<std::function<void()>> jobs;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (auto & r : queue_) r->finish(StopReason::ModelUnloaded, "the model was unloaded before the prediction started");
        queue_.clear();
        jobs.swap(jobs_);
    }
    for (auto & job : jobs) job();  // each sees stop_ and reports the unload
}

// Debug jobs (eval_logits) run between requests: none is admitted while one waits.
void Engine::run_jobs() {
    while (active_.empty()) {
        std::function<void()> job;
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (jobs_.empty()) return;
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        job();
    }
}

// Admits queued requests while sequences are free, in arrival order, except those that wait
// for another request to evaluate the prefix they share (waits()).
void Engine::admit_queued() {
    for (size_t next = 0;;) {
        std::shared_ptr<Request> req;
        size_t waiting = 0;
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (!jobs_.empty()) return;
            for (; next < queue_.size() && waits(*queue_[next]); ++next) {
                if (!queue_[next]->held_ && !queue_[next]->fork_of_) counters_.shared_prefix_waits += 1;
                queue_[next]->held_ = true;
            }
            if (next >= queue_.size()) return;
            req = queue_[next];
            waiting = queue_.size() - next;
        }
        // More streams when every sequence is busy: memory grows with use. A request that would
        // displace another conversation spills it to the host tier instead (a few ms for a
        // typical chat), since a prompt that never comes back (a script's one-off questions)
        // would otherwise pay for a larger context: 3-15 ms of TTFT at SmolLM2's 4096 tokens
        // on a CPU (benchmarks/kv_growth.py), 130-260 ms where the new cache is written whole.
        // A conversation that does come back shows chats interleave: the engine then grows
        // once it is idle (grow_when_idle_). Without a host tier, displacing loses
        // the conversation, so it grows at once.
        const bool full = static_cast<int32_t>(active_.size()) >= n_streams_;
        const bool displaces = spill_.budget() == 0 && cache_.would_displace(req->prompt_, req->lora_);
        if ((full || displaces) && !grow(streams_for(active_.size() + waiting)) && (full || !ctx_)) return;
        {
            std::lock_guard<std::mutex> lk(mu_);
            queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(next));
        }
        admit(std::move(req));
    }
}

// The stream count to grow to when n_wanted requests want a sequence at once: the current
// count doubled until they fit. Each growth is a whole new context (3-15 ms at SmolLM2's
// 4096 tokens on a CPU, 130-260 ms where the new cache is written whole), so 4 requests
// arriving together on one stream grow once (to 4), not twice.
int32_t Engine::streams_for(size_t n_wanted) const {
    int32_t want = n_streams_ * 2;
    while (want < params_.n_seq && static_cast<size_t>(want) < n_wanted) want *= 2;
    return want;
}

// Copying a sequence moves n_cells cells out to a host buffer and back in; evaluating the
// shared prefix again costs n_tokens tokens. True when the copy is the cheaper. The copy ran
// at ~2 GB/s each way (1.8 MB of SmolLM2 cells out and in: 1.8 ms on the 2-core CI machine).
bool Engine::copy_pays(size_t n_cells, size_t n_tokens) const {
    const double bytes = bytes_per_cell_ * static_cast<double>(n_cells);
    return 2.0 * bytes / 2e9 < static_cast<double>(n_tokens) * prompt_sec_per_token_;
}

// Copies sequence src's cells into dst (emptied first); false when that failed (dst is then
// empty). Sequences live in separate KV streams: llama_memory_seq_cp would copy the whole
// stream buffer, every cell, used or not; the sequence-state API copies only src's own cells.
bool Engine::copy_prefix(llama_seq_id src, llama_seq_id dst) {
    llama_memory_t mem = llama_get_memory(ctx_);
    llama_memory_seq_rm(mem, dst, -1, -1);
    const size_t size = llama_state_seq_get_size(ctx_, src);
    state_buf_.resize(size);
    auto & toks = cache_.tokens(dst);
    if (llama_state_seq_get_data(ctx_, state_buf_.data(), size, src) == size &&
        llama_state_seq_set_data(ctx_, state_buf_.data(), size, dst) == size) {
        const auto & from = cache_.tokens(src);
        toks.assign(from.begin(), from.end());
        cache_.set_key(dst, cache_.key(src));
        return true;
    }
    llama_memory_seq_rm(mem, dst, -1, -1);
    toks.clear();
    return false;
}

// Saves what sequence seq holds beyond its first n_kept tokens into the host tier, before the
// sequence is given to another request; what the host tier pushes out (its least recently used
// entries, or this one when larger than its budget) goes to the disk tier when there is one. A
// tail shorter than PrefixCache::kKeepTail (the end of a previous answer) is not worth an entry.
void Engine::spill(llama_seq_id seq, size_t n_kept) {
    const auto & toks = cache_.tokens(seq);
    if ((spill_.budget() == 0 && !disk_.enabled()) || toks.size() < n_kept + PrefixCache::kKeepTail) return;
    const size_t size = llama_state_seq_get_size(ctx_, seq);
    SpillCache::Entry e{toks, std::vector<uint8_t>(size), cache_.key(seq)};
    if (llama_state_seq_get_data(ctx_, e.state.data(), size, seq) != size) return;
    std::vector<SpillCache::Entry> pushed_out;
    spill_.put(std::move(e), pushed_out);
    uint64_t written = 0;
    // The disk tier's identity holds the load-time LoRA scales (prompt_cache.py): cells of
    // another setting are not written there.
    for (const auto & p : pushed_out) written += p.key == loras_.scales() && disk_.put(p.tokens, p.state) ? 1 : 0;
    std::lock_guard<std::mutex> lk(mu_);
    counters_.spills += size <= spill_.budget();
    counters_.spill_bytes = spill_.bytes();
    counters_.disk_writes += written;
    counters_.disk_bytes = disk_.bytes();
}

// Restoring n tokens' state of `bytes` pays when reading it (from a file at `file_rate`
// bytes/s, 0 for the host tier; then into the cache at the measured ~2 GB/s) is faster than
// evaluating the tokens at this engine's measured rate.
bool Engine::restore_pays(size_t bytes, double file_rate, size_t n_tokens) const {
    const double b = static_cast<double>(bytes);
    const double t_read = (file_rate > 0 ? b / file_rate : 0.0) + b / 2e9;
    return t_read < static_cast<double>(n_tokens) * prompt_sec_per_token_;
}

// Takes out of the cache tiers the entry that shares the longest prefix with the prompt, when
// it gives at least kKeepTail more tokens than the `keep` the sequences offer and restoring it
// pays. The host tier is read at memory speed (~2 GB/s, a copy); a file at a conservative
// 1 GB/s (page cache or SSD). A file that fails its checks is removed and the host tier tried.
std::optional<SpillCache::Entry> Engine::take_spilled(const std::vector<llama_token> & prompt, size_t keep,
                                                     const std::vector<float> & key) {
    const size_t most = prompt.size() - 1;
    size_t n_ram = 0, n_disk = 0;
    const SpillCache::Iter it = spill_.best(prompt, key, n_ram);
    // The disk tier holds cells of the load-time LoRA setting only (spill).
    const DiskCache::Indexed * d = key == loras_.scales() ? disk_.best(prompt, n_disk) : nullptr;
    n_ram = std::min(n_ram, most);
    n_disk = std::min(n_disk, most);
    if (d && n_disk > n_ram && n_disk >= keep + PrefixCache::kKeepTail && restore_pays(d->bytes, 1e9, n_disk - keep)) {
        std::optional<SpillCache::Entry> e = disk_.read(d);
        if (e) e->key = key;
        std::lock_guard<std::mutex> lk(mu_);
        counters_.disk_restores += e.has_value();
        counters_.disk_bytes = disk_.bytes();
        if (e) return e;
    }
    if (it == spill_.end() || n_ram < keep + PrefixCache::kKeepTail || !restore_pays(it->state.size(), 0, n_ram - keep)) {
        return std::nullopt;
    }
    return spill_.take(it);
}

// Puts a host-tier entry into seq (emptied first); returns how many prompt tokens it now holds
// (0 when llama.cpp refused the state: the sequence is then empty).
size_t Engine::restore(llama_seq_id seq, SpillCache::Entry & e, const std::vector<llama_token> & prompt) {
    llama_memory_t mem = llama_get_memory(ctx_);
    llama_memory_seq_rm(mem, seq, -1, -1);
    auto & toks = cache_.tokens(seq);
    // Saved before the context grew: rewritten for the current stream count (seq_state.h).
    if (seq_state_streams(e.state) != static_cast<uint32_t>(n_streams_)) {
        std::vector<uint8_t> now;
        if (!restream_seq_state(e.state, static_cast<uint32_t>(n_streams_), now)) now.clear();
        e.state.swap(now);
    }
    if (e.state.empty() || llama_state_seq_set_data(ctx_, e.state.data(), e.state.size(), seq) != e.state.size()) {
        llama_memory_seq_rm(mem, seq, -1, -1);
        toks.clear();
        return 0;
    }
    toks = std::move(e.tokens);
    return std::min(common_prefix(toks, prompt), prompt.size() - 1);
}

void Engine::warn(const std::string & message) {
    std::lock_guard<std::mutex> lk(mu_);
    warnings_.push_back(message);
}

std::vector<std::string> Engine::take_warnings() {
    std::lock_guard<std::mutex> lk(mu_);
    return std::exchange(warnings_, {});
}

// The sequence to save is the shortest that starts with all of `tokens` but the last (a
// request's last prompt token is in its sequence only once the next token is decoded).
size_t Engine::persist(const std::vector<llama_token> & tokens) {
    if (tokens.size() < 2) throw InvalidArgument("persist: at least 2 tokens");
    return run_job([this, &tokens]() -> size_t {
        llama_seq_id best = -1;
        for (llama_seq_id s = 0; s < n_streams_; ++s) {
            const auto & held = cache_.tokens(s);
            const bool holds = common_prefix(held, tokens) >= tokens.size() - 1 && cache_.key(s) == loras_.scales();
            if (holds && (best < 0 || held.size() < cache_.tokens(best).size())) best = s;
        }
        if (best < 0 || !disk_.enabled()) return 0;
        const size_t size = llama_state_seq_get_size(ctx_, best);
        std::vector<uint8_t> state(size);
        if (llama_state_seq_get_data(ctx_, state.data(), size, best) != size) return 0;
        const auto & held = cache_.tokens(best);
        const bool ok = disk_.put(held, state);
        std::lock_guard<std::mutex> lk(mu_);
        counters_.disk_writes += ok;
        counters_.disk_bytes = disk_.bytes();
        return ok ? held.size() : 0;
    });
}

// A shared prefix shorter than this is evaluated with the rest of the prompt rather than waited for.
constexpr size_t kMinSharedPrefix = 16;

// Whether a queued request should stay queued for now: an admitted request is evaluating a
// prompt that shares a longer prefix with this one than any sequence holds, and has not got
// through that prefix yet. Admitted together, both would evaluate it (N chats with one system
// prompt, started at once); held back until it is in the leader's sequence, this one copies
// it. The leader's prompt advances every step, or the leader leaves, so the wait ends.
bool Engine::waits(const Request & req) const {
    if (req.cancelled()) return false;
    if (req.fork_of_) {
        // A branch waits while its group's first request does, so that it can fork from it once
        // that one runs; then it forks or falls back (admit).
        return std::any_of(queue_.begin(), queue_.end(), [&](const auto & q) { return q == req.fork_of_; });
    }
    const auto & prompt = req.prompt_;
    if (prompt.size() < 2) return false;
    const size_t cached = cache_.longest_cached(prompt, req.lora_);
    for (const auto & ap : active_) {
        const Active & a = *ap;
        if (!a.in_prompt() || a.req->lora_ != req.lora_) continue;
        // The last prompt token is evaluated anyway (its logits give the first token).
        const size_t shared = std::min(common_prefix(a.req->prompt_, prompt), prompt.size() - 1);
        if (shared > a.n_prompt_done && shared >= cached + kMinSharedPrefix && copy_pays(shared, shared - cached)) {
            return true;
        }
    }
    return false;
}

void Engine::admit(std::shared_ptr<Request> req) {
    if (req->cancelled()) {
        req->finish(StopReason::UserStopped);
        request_done();
        return;
    }
    auto a = std::make_unique<Active>(req->params_.stop_strings);
    a->req = req;
    a->t_admit = Clock::now();
    try {
        a->sampler = make_sampler(req->params_.sampling, model_->vocab());
        if (req->params_.draft_max > 0) {
            const bool ngram = req->params_.draft_model == nullptr;
            a->drafter = std::make_unique<DraftLength>(req->params_.draft_max, req->params_.draft_min, !ngram,
                                                       ngram ? 3.0 : 1.0);
            if (ngram) a->lookup = std::make_unique<NgramLookup>();
        }
        a->grammar = std::move(req->grammar_);
        // An image's placeholder tokens are no text the penalties should see.
        prime_penalties(a->sampler.get(), req->vision_ ? req->vision_->text_tokens : req->prompt_);
    } catch (const std::exception & e) {
        req->finish(StopReason::Failed, e.what());
        request_done();
        return;
    }
    const auto & prompt = req->prompt_;
    // A branch whose leader has not sampled yet forks from it (fork_branches); otherwise it runs
    // as an ordinary request.
    Active * leader = req->fork_of_ ? active_of(req->fork_of_.get()) : nullptr;
    if (leader && leader->t_first != Clock::time_point{}) leader = nullptr;
    a->fork_from = leader;
    req->fork_of_.reset();
    PrefixCache::Match m = cache_.acquire(prompt, req->lora_, [&](llama_seq_id src, size_t n_common) {
        return !leader && copy_pays(cache_.tokens(src).size(), n_common);
    });
    a->seq = m.seq;
    // At least the last prompt token is evaluated again: its logits give the first token.
    size_t keep = std::min(m.n_common, prompt.size() - 1);
    // A conversation coming back from the host tier leaves it first, so that the one this
    // request displaces cannot push it out; what the sequence holds beyond what this request
    // keeps of it then goes to the tier.
    std::optional<SpillCache::Entry> back = take_spilled(prompt, keep, req->lora_);
    spill(a->seq, back || m.copy_from >= 0 ? 0 : keep);
    cache_.set_key(a->seq, req->lora_);  // what it keeps (keep tokens) was computed under this setting
    size_t n_restored = 0;
    if (back) {
        const size_t n_saved = back->tokens.size();
        keep = n_restored = restore(a->seq, *back, prompt);
        // The conversation itself came back (not a prompt sharing its first tokens, such as a
        // system prompt): chats interleave, so more sequences will pay.
        const bool returned = n_restored > 0 && n_restored + PrefixCache::kKeepTail >= n_saved;
        grow_when_idle_ = grow_when_idle_ || (returned && n_streams_ < params_.n_seq);
    } else if (m.copy_from >= 0 && !copy_prefix(m.copy_from, a->seq)) {
        keep = 0;
    }
    llama_memory_t mem = llama_get_memory(ctx_);
    auto & toks = cache_.tokens(a->seq);
    if (!llama_memory_seq_rm(mem, a->seq, static_cast<llama_pos>(keep), -1)) {
        // Some memories (recurrent, SWA) cannot drop a tail: start the sequence over.
        llama_memory_seq_rm(mem, a->seq, -1, -1);
        keep = 0;
        n_restored = 0;
    }
    toks.resize(keep);
    a->n_prompt_done = keep;
    req->prompt_done_.store(static_cast<int32_t>(keep));
    if (req->vision_) {
        try {
            use_lora(req->lora_);  // the image chunks are decoded under the request's LoRA setting
            a->n_prompt_done = eval_vision_prefix(*req, a->seq, keep);
            req->prompt_done_.store(static_cast<int32_t>(a->n_prompt_done));
        } catch (const std::exception & e) {
            active_.push_back(std::move(a));
            finish(*active_.back(), StopReason::Failed, e.what());
            active_.pop_back();
            return;
        }
    }
    req->stats_.prompt_tokens = static_cast<int32_t>(prompt.size());
    req->stats_.restored_tokens = static_cast<int32_t>(n_restored);
    req->stats_.cached_tokens = static_cast<int32_t>(keep - n_restored);
    req->stats_.queue_time = seconds(req->t_submit_, a->t_admit);
    {
        std::lock_guard<std::mutex> lk(mu_);
        counters_.prompt_tokens_cached += keep - n_restored;
        counters_.prompt_tokens_restored += n_restored;
        counters_.restores += n_restored > 0;
        counters_.spill_bytes = spill_.bytes();
    }
    active_.push_back(std::move(a));
}

Engine::Active * Engine::active_of(const Request * req) {
    for (auto & ap : active_) {
        if (ap->req.get() == req) return ap.get();
    }
    return nullptr;
}

// The leader's prompt is in its sequence and its logits are in the batch: each waiting branch
// copies the sequence and draws its first token from those logits with its own sampler. A
// branch whose copy failed evaluates the prompt itself from the next step on.
void Engine::fork_branches(Active & leader) {
    for (auto it = active_.begin(); it != active_.end();) {
        Active & b = **it;
        if (b.fork_from != &leader) {
            ++it;
            continue;
        }
        b.fork_from = nullptr;
        if (!copy_prefix(leader.seq, b.seq)) {
            b.n_prompt_done = 0;
            ++it;
            continue;
        }
        b.n_prompt_done = b.req->prompt_.size();
        b.req->prompt_done_.store(static_cast<int32_t>(b.n_prompt_done));
        b.req->stats_.cached_tokens = static_cast<int32_t>(b.n_prompt_done);
        b.req->stats_.restored_tokens = 0;
        {
            std::lock_guard<std::mutex> lk(mu_);
            counters_.forked_sequences += 1;
        }
        bool keep = true;
        const int32_t before = b.req->stats_.predicted_tokens;
        try {
            keep = sample(b, leader.i_logits);
        } catch (const std::exception & e) {
            finish(b, StopReason::Failed, e.what());
            keep = false;
        }
        step_generated_ += b.req->stats_.predicted_tokens - before;
        it = keep ? std::next(it) : active_.erase(it);
    }
}

void Engine::finish(Active & a, StopReason reason, const std::string & error) {
    // Branches still waiting for this request's prompt evaluate it themselves.
    for (auto & ap : active_) {
        if (ap->fork_from == &a) ap->fork_from = nullptr;
    }
    if (reason != StopReason::Failed && reason != StopReason::StopString) {
        // Text held back for an undecided stop string or an incomplete character is final now.
        std::string tail = a.stops.push(a.utf8.flush()).emit;
        tail += a.stops.flush();
        a.req->emit(tail, a.n_unemitted, a.drafted_unemitted);
        a.n_unemitted = 0;
    }
    const auto now = Clock::now();
    RequestStats & st = a.req->stats_;
    if (a.t_first != Clock::time_point{}) st.generation_time = seconds(a.t_first, now);
    else st.prompt_eval_time = seconds(a.t_admit, now);
    llama_memory_t mem = llama_get_memory(ctx_);
    // Cells past the token list (a draft's, not verified when the request ended) leave, so that
    // the prefix cache's account of the sequence stays exact.
    llama_memory_seq_rm(mem, a.seq, static_cast<llama_pos>(cache_.tokens(a.seq).size()), -1);
    if (reason == StopReason::Failed) {
        // The sequence may hold a partial batch: forget it rather than trust it.
        llama_memory_seq_rm(mem, a.seq, -1, -1);
        cache_.tokens(a.seq).clear();
    } else if (a.n_exact < cache_.tokens(a.seq).size()) {
        // Shifted: only the head is what a fresh evaluation of those tokens would give.
        auto & toks = cache_.tokens(a.seq);
        if (llama_memory_seq_rm(mem, a.seq, static_cast<llama_pos>(a.n_exact), -1)) {
            toks.resize(a.n_exact);
        } else {
            llama_memory_seq_rm(mem, a.seq, -1, -1);
            toks.clear();
        }
    }
    cache_.release(a.seq);
    finished_.push_back({a.req, reason, error});  // woken at the end of the step (wake_finished)
}

void Engine::wake_finished() {
    for (Finished & f : finished_) {
        f.req->finish(f.reason, f.error);
        request_done();
    }
    finished_.clear();
}

void Engine::request_done() {
    last_done_ns_.store(Clock::now().time_since_epoch().count());
    --in_flight_;
}

double Engine::idle_seconds() const {
    if (in_flight_.load() != 0) return 0.0;
    const auto last = Clock::time_point(Clock::duration(last_done_ns_.load()));
    return seconds(last, Clock::now());
}

bool Engine::sample(Active & a, int32_t i_batch) {
    Request & r = *a.req;
    const llama_token tok = sample_token(a.sampler.get(), a.grammar.get(), ctx_, i_batch, sample_buf_);
    const auto now = Clock::now();
    if (a.t_first == Clock::time_point{}) {
        a.t_first = now;
        r.stats_.time_to_first_token = seconds(r.t_submit_, now);
        r.stats_.prompt_eval_time = seconds(a.t_admit, now);
    }
    if (!r.params_.ignore_eos && model_->is_eog(tok)) {
        finish(a, StopReason::EosFound);
        return false;
    }
    r.stats_.predicted_tokens++;
    r.stats_.tokens.push_back(tok);
    if (r.params_.logprobs >= 0) {
        const float * logits = llama_get_logits_ith(ctx_, i_batch);
        TokenLogprob lp = token_logprob(logits, llama_vocab_n_tokens(model_->vocab()), tok, r.params_.logprobs, sample_buf_);
        std::lock_guard<std::mutex> lk(r.mu_);
        r.logprobs_.push_back(std::move(lp));
    }
    const auto & keep = r.params_.preserved_tokens;
    const bool special = !keep.empty() && std::find(keep.begin(), keep.end(), tok) != keep.end();
    StopMatcher::Result sr = a.stops.push(a.utf8.push(model_->token_to_piece(tok, special)));
    a.n_unemitted++;
    a.drafted_unemitted = a.drafted_unemitted || tok == a.guess;
    if (!sr.emit.empty()) {
        r.emit(sr.emit, a.n_unemitted, a.drafted_unemitted);
        a.n_unemitted = 0;
        a.drafted_unemitted = false;
    }
    if (sr.stopped) {
        finish(a, StopReason::StopString);
        return false;
    }
    if (r.params_.max_tokens >= 0 && r.stats_.predicted_tokens >= r.params_.max_tokens) {
        finish(a, StopReason::MaxTokens);
        return false;
    }
    // The window holds the prompt and the response: the token just sampled is its last.
    // (The other policies shift the window before the token is decoded: see step().)
    if (r.params_.overflow == ContextOverflow::StopAtLimit &&
        static_cast<int32_t>(cache_.tokens(a.seq).size()) + 1 >= n_ctx_) {
        finish(a, StopReason::ContextLength);
        return false;
    }
    a.next = tok;
    return true;
}

// Makes room in a full window, as llama.cpp's context shift does: keeps the first
// n_keep cells, drops half of the rest (the oldest ones after the head), and moves the
// later cells down to close the gap (their keys are re-rotated at the next decode).
// The sequence's token list follows, so that it still says what each cell holds.
// False when the memory cannot shift (e.g. recurrent models, M-RoPE).
bool Engine::shift(Active & a) {
    llama_memory_t mem = llama_get_memory(ctx_);
    if (!llama_memory_can_shift(mem)) return false;
    auto & toks = cache_.tokens(a.seq);
    const int32_t n_past = static_cast<int32_t>(toks.size());
    const int32_t n_keep = std::min(a.req->n_keep_, n_past - 2);
    const int32_t n_discard = (n_past - n_keep) / 2;
    if (n_keep < 0 || n_discard < 1) return false;
    if (!llama_memory_seq_rm(mem, a.seq, n_keep, n_keep + n_discard)) return false;
    llama_memory_seq_add(mem, a.seq, n_keep + n_discard, n_past, -n_discard);
    toks.erase(toks.begin() + n_keep, toks.begin() + n_keep + n_discard);
    a.n_exact = std::min(a.n_exact, static_cast<size_t>(n_keep));
    cache_.limit_exact(a.seq, a.n_exact);
    a.req->stats_.context_shifts++;
    return true;
}

void Engine::step() {
    drop_cancelled();
    if (!active_.empty() && decode_batch()) commit_and_sample();
    publish();
    wake_finished();
}

// Cancelled requests leave before any work is spent on them.
void Engine::drop_cancelled() {
    for (auto it = active_.begin(); it != active_.end();) {
        if ((*it)->req->cancelled()) {
            finish(**it, StopReason::UserStopped);
            it = active_.erase(it);
        } else {
            ++it;
        }
    }
}

int32_t Engine::batch_add(llama_token t, llama_pos pos, llama_seq_id seq, bool logits) {
    const int32_t i = batch_.n_tokens++;
    batch_.token[i] = t;
    batch_.pos[i] = pos;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = seq;
    batch_.logits[i] = logits;
    return i;
}

// Builds one batch: first the next token of every generating request (their latency matters
// most), then prompt chunks in arrival order. Requests whose window is full and cannot shift
// finish here. False when there is nothing to decode.
bool Engine::build_batch() {
    batch_.n_tokens = 0;
    decoding_.clear();
    pick_lora_group();
    for (auto it = active_.begin(); it != active_.end();) {
        Active & a = **it;
        a.i_logits = -1;
        a.n_in_batch = 0;
        if (!in_step(a)) {
            ++it;
            continue;
        }
        if (!a.in_prompt()) {
            const auto & toks = cache_.tokens(a.seq);
            if (static_cast<int32_t>(toks.size()) + 1 > n_ctx_ &&
                (a.req->params_.overflow == ContextOverflow::StopAtLimit || !shift(a))) {
                finish(a, StopReason::ContextLength);
                it = active_.erase(it);
                continue;
            }
            decoding_.push_back(&a);
        }
        ++it;
    }
    // In ascending sequence order: llama.cpp puts a run of consecutive sequence ids into
    // one micro-batch when each sequence has its own KV stream (llama_batch_allocr::
    // split_equal), and every micro-batch is another pass over all the weights. In arrival
    // order, 4 requests took 93 micro-batches for 25 steps, and 8 streams decoded at
    // 142 tok/s instead of 176 (SmolLM2, 2 cores).
    std::sort(decoding_.begin(), decoding_.end(), [](const Active * x, const Active * y) { return x->seq < y->seq; });
    seq_runs_ = 0;
    for (size_t k = 0; k < decoding_.size(); ++k) {
        Active * a = decoding_[k];
        a->i_logits = batch_add(a->next, static_cast<llama_pos>(cache_.tokens(a->seq).size()), a->seq, true);
        a->n_in_batch = 1;
        if (k == 0 || decoding_[k - 1]->seq + 1 != a->seq) ++seq_runs_;
    }
    // Drafts only for a lone generating request: with one KV stream per sequence llama.cpp
    // splits a batch into micro-batches that take as many tokens from each sequence
    // (split_equal), so one request's draft would cost every other one an extra pass over the
    // weights.
    if (decoding_.size() == 1) add_draft(*decoding_.front());
    for (auto & ap : active_) {
        Active & a = *ap;
        if (!a.in_prompt() || a.fork_from || !in_step(a)) continue;
        const int32_t room = params_.n_batch - batch_.n_tokens;
        if (room <= 0) break;
        const auto & prompt = a.req->prompt_;
        const size_t take = std::min<size_t>(room, prompt.size() - a.n_prompt_done);
        for (size_t j = 0; j < take; ++j) {
            const size_t k = a.n_prompt_done + j;
            const bool last = k + 1 == prompt.size();
            const int32_t i = batch_add(prompt[k], static_cast<llama_pos>(k), a.seq, last);
            if (last) a.i_logits = i;
        }
        a.n_in_batch = static_cast<int32_t>(take);
    }
    return batch_.n_tokens > 0;
}

// The LoRA setting of this step's batch (step_lora_). In the common case every active request
// has the same one: one comparison each and no switch. Otherwise the settings take turns, a step
// each, in the order their first active request arrived: the one after the setting the context
// has now, so that no group waits more than one step per other group. (Each switch makes
// llama.cpp reserve its compute graph again.)
void Engine::pick_lora_group() {
    step_mixed_ = false;
    if (loras_.empty() || active_.empty()) return;
    const std::vector<float> & first = active_.front()->req->lora_;
    step_mixed_ = std::any_of(active_.begin(), active_.end(), [&](const auto & ap) { return ap->req->lora_ != first; });
    if (!step_mixed_) {
        step_lora_ = first;
        return;
    }
    std::vector<const std::vector<float> *> groups;
    for (const auto & ap : active_) {
        const std::vector<float> & k = ap->req->lora_;
        if (std::none_of(groups.begin(), groups.end(), [&](const auto * g) { return *g == k; })) groups.push_back(&k);
    }
    size_t i = 0;
    while (i < groups.size() && *groups[i] != lora_applied_) ++i;
    step_lora_ = *groups[i < groups.size() ? (i + 1) % groups.size() : 0];
}

bool Engine::in_step(const Active & a) const {
    return !step_mixed_ || a.req->lora_ == step_lora_;
}

// Sets a LoRA setting on the context unless it has it already.
void Engine::use_lora(const std::vector<float> & setting) {
    if (loras_.empty() || setting == lora_applied_) return;
    loras_.apply(ctx_, setting);
    lora_applied_ = setting;
    std::lock_guard<std::mutex> lk(mu_);
    counters_.lora_switches += 1;
}

std::vector<float> Engine::lora_defaults() const {
    std::lock_guard<std::mutex> lk(mu_);
    return lora_defaults_;
}

void Engine::set_lora_defaults(const std::vector<std::pair<int32_t, float>> & scales) {
    std::vector<float> next = loras_.with(lora_defaults(), scales);
    std::lock_guard<std::mutex> lk(mu_);
    lora_defaults_ = std::move(next);
}

// Puts the request's draft (draft_length.h) into the batch after its next token, within what
// the window, its maxTokens and the batch leave.
void Engine::add_draft(Active & a) {
    RequestStats & st = a.req->stats_;
    st.ignored_draft_tokens += static_cast<int32_t>(a.draft.size());  // a retried batch's: never verified
    a.draft.clear();
    if (!a.drafter) return;
    const auto & toks = cache_.tokens(a.seq);
    // The window must keep room for the next token and the one sampled after the draft.
    int32_t room = n_ctx_ - static_cast<int32_t>(toks.size()) - 2;
    if (a.req->params_.max_tokens >= 0) room = std::min(room, a.req->params_.max_tokens - st.predicted_tokens - 1);
    room = std::min(room, params_.n_batch - batch_.n_tokens);
    int32_t ignored = 0;
    if (a.req->params_.draft_model) {
        a.draft = model_draft(a, room, ignored);
    } else {
        const int32_t k = a.drafter->length(draft_cost(batch_.n_tokens, 0.0), batch_.n_tokens);
        a.draft = a.drafter->fit(k > 0 ? a.lookup->draft(toks, a.next, k) : std::vector<llama_token>{}, k, room,
                                 ignored);
    }
    st.draft_tokens += ignored + static_cast<int32_t>(a.draft.size());
    st.ignored_draft_tokens += ignored;
    const auto pos = static_cast<llama_pos>(toks.size() + 1);
    for (size_t j = 0; j < a.draft.size(); ++j) {
        const int32_t i = batch_add(a.draft[j], pos + static_cast<llama_pos>(j), a.seq, true);
        if (j == 0) a.i_draft = i;
    }
    a.n_in_batch += static_cast<int32_t>(a.draft.size());
}

// A draft model's tokens for this step (draft_model.h), as many as the drafter's policy asks
// for and `room` leaves. A draft token costs its verification row and the draft's own decode,
// both as shares of a plain step: a model drafting for itself never pays (k + 1 tokens at best
// for 1 + ~1.2k steps), one several times faster than the model does when mostly accepted.
// Its threads are the step's: the target's pools, attached to its context.
std::vector<llama_token> Engine::model_draft(Active & a, int32_t room, int32_t & ignored) {
    ignored = 0;
    DraftModel & dm = *a.req->params_.draft_model;
    const double own = decode_step_sec_ > 0 ? dm.sec_per_token() / decode_step_sec_ : 0.0;
    const int32_t k = a.drafter->length(draft_cost(batch_.n_tokens, own), batch_.n_tokens);
    if (k == 0 || room <= 0) return {};
    llama_set_n_threads(dm.context(), n_threads_, n_threads_);
    pools_.attach(dm.context());
    auto d = dm.draft(a.seq, cache_.tokens(a.seq), a.next, std::min(k, room), model_->n_vocab(),
                      a.req->params_.draft_p_min);
    if (d.empty()) a.drafter->drafted_nothing();
    return a.drafter->fit(std::move(d), k, room, ignored);
}

// The draft's tokens were decoded after `next`, whose successor sample() has just drawn. Each
// draft token equal to the token drawn is kept, and the one after it drawn from its logits with
// the request's own sampler chain (grammar, penalties, temperature, seed: one draw per token, as
// without a draft); from the first that differs on, the cells leave. So the output is the one
// the request would give without drafting, given the same logits. Returns whether it goes on.
bool Engine::verify_draft(Active & a, bool keep) {
    auto & toks = cache_.tokens(a.seq);
    RequestStats & st = a.req->stats_;
    size_t n_ok = 0;
    while (keep && n_ok < a.draft.size() && a.next == a.draft[n_ok]) {
        toks.push_back(a.draft[n_ok]);
        a.guess = n_ok + 1 < a.draft.size() ? a.draft[n_ok + 1] : LLAMA_TOKEN_NULL;
        keep = sample(a, a.i_draft + static_cast<int32_t>(n_ok));
        ++n_ok;
    }
    a.guess = LLAMA_TOKEN_NULL;
    const size_t n_rejected = keep && n_ok < a.draft.size() ? 1 : 0;
    st.accepted_draft_tokens += static_cast<int32_t>(n_ok);
    st.rejected_draft_tokens += static_cast<int32_t>(n_rejected);
    st.ignored_draft_tokens += static_cast<int32_t>(a.draft.size() - n_ok - n_rejected);
    a.drafter->verified(a.draft.size(), n_ok);
    if (keep) llama_memory_seq_rm(llama_get_memory(ctx_), a.seq, static_cast<llama_pos>(toks.size()), -1);
    a.draft.clear();
    return keep;
}

// Builds and decodes the step's batch. False when nothing was decoded (nothing to do, or the
// requests in the batch failed).
bool Engine::decode_batch() {
    for (;;) {
        if (!build_batch()) return false;
        set_step_threads();
        use_lora(step_lora_);
        const Clock::time_point t_decode = Clock::now();
        const int32_t ret = llama_decode(ctx_, batch_);
        if (ret == 0) {
            update_step_costs(t_decode);
            return true;
        }
        if (ret == 1) {
            // No KV slot for the batch. Each sequence has its own stream and no request
            // exceeds it, so evicting other conversations would not help: stop the newest
            // request (llama.cpp restored the memory) and retry the others.
            finish(*active_.back(), StopReason::Failed, "no room in the KV cache for this request");
            active_.pop_back();
            if (active_.empty()) return false;
            continue;
        }
        const std::string msg = "llama_decode failed with code " + std::to_string(ret);
        for (auto & a : active_) {
            if (a->n_in_batch > 0) finish(*a, StopReason::Failed, msg);
        }
        active_.remove_if([](const std::unique_ptr<Active> & a) { return a->n_in_batch > 0; });
        return false;
    }
}

// A step runs with the most threads that a request in its batch asked for (cpuThreads per
// prediction; all of the pool by default): one decode serves every request in it, so the most
// demanding one decides. When the load config left cpuThreads to lmfast, no more than other
// work leaves free (cpu_share.h). The pool's other workers sit the step out.
// llama_set_n_threads only sets the count the next graph is computed with.
void Engine::set_step_threads() {
    int32_t n = 0;
    for (const auto & a : active_) {
        if (a->n_in_batch > 0) n = std::max(n, a->req->params_.n_threads > 0 ? a->req->params_.n_threads : n_threads_);
    }
    if (n == 0) n = n_threads_;
    const int32_t limit = cpu_share_ ? cpu_share_->threads() : std::numeric_limits<int32_t>::max();
    // A separate batch thread count (EngineParams) applies when no request asked for fewer.
    const int32_t n_batch = params_.n_threads_batch > 0 && n == n_threads_ ? params_.n_threads_batch : n;
    n = std::min(n, limit);
    pools_.use(ctx_, n, std::min(n_batch, limit));
    for (auto & a : active_) {
        if (a->n_in_batch > 0) a->req->stats_.n_threads = std::max(a->req->stats_.n_threads, n);
    }
}

// A prompt-sized batch updates the per-token cost estimate that admit() weighs copies by; a
// one-token step the cost of a plain decode step; every other batch of fewer than
// kStepCostRows tokens its cost relative to that one, which drafts are priced by (draft_cost).
// Relative, because other work on the machine slows every size alike: a size priced out of
// drafting is not measured again, and its time from a quieter minute would look cheap.
void Engine::update_step_costs(Clock::time_point t_decode) {
    const int32_t n = batch_.n_tokens;
    llama_synchronize(ctx_);  // the logits are read right after anyway
    const double took = seconds(t_decode, Clock::now());
    // Only one sequence's batches, as a draft's are: llama.cpp splits a batch of several
    // sequences into micro-batches that take as many tokens from each (split_equal), which
    // prices n tokens otherwise than one sequence's n.
    if (n > 1 && n < kStepCostRows && decode_step_sec_ > 0 &&
        std::all_of(batch_.seq_id, batch_.seq_id + n,
                    [&](const llama_seq_id * s) { return s[0] == batch_.seq_id[0][0]; })) {
        double & r = step_rel_[static_cast<size_t>(n)];
        r = r > 0 ? 0.8 * r + 0.2 * took / decode_step_sec_ : took / decode_step_sec_;
    }
    if (n == 1) {
        decode_step_sec_ = decode_step_sec_ > 0 ? 0.8 * decode_step_sec_ + 0.2 * took : took;
    } else if (n >= 16) {
        prompt_sec_per_token_ = 0.8 * prompt_sec_per_token_ + 0.2 * took / n;
    }
}

// A step of n tokens in one-token steps: measured, or until then 1 plus prompt-rate tokens
// (0.17 a token, SmolLM2 on 2 cores, before a step is measured). That guess is low (a prompt
// token is the cheapest kind), so a size not yet tried looks good, is drafted, and then is
// priced by what it took.
double Engine::step_cost(int32_t n) const {
    if (n <= 1) return 1.0;
    if (n < kStepCostRows && step_rel_[static_cast<size_t>(n)] > 0) return step_rel_[static_cast<size_t>(n)];
    const double per_token = decode_step_sec_ > 0 ? prompt_sec_per_token_ / decode_step_sec_ : 0.17;
    return 1.0 + (n - 1) * per_token;
}

// What k draft tokens make a step of `rows` tokens cost, as a share of it (DraftLength::StepCost),
// `own` a step's share per draft token that a draft model adds.
// LMFAST_DRAFT_COST_RATIO prices every draft token at that share instead, for measuring.
DraftLength::StepCost Engine::draft_cost(int32_t rows, double own) const {
    const double forced = draft_cost_ratio();
    if (forced > 0) return DraftLength::linear(forced + own);
    const double base = step_cost(rows);
    return [this, rows, base, own](int32_t k) { return step_cost(rows + k) / base + k * own; };
}

// LMFAST_DRAFT_COST_RATIO: one draft token's price as a share of a step, for measuring; 0 when
// unset (draft_cost then uses the measured step times).
double Engine::draft_cost_ratio() const {
    static const double forced = [] {
        const char * v = std::getenv("LMFAST_DRAFT_COST_RATIO");
        return v ? std::atof(v) : 0.0;
    }();
    return forced;
}

// The batch is in the KV cache now: record it, then sample where logits were asked for.
void Engine::commit_and_sample() {
    for (auto it = active_.begin(); it != active_.end();) {
        Active & a = **it;
        auto & toks = cache_.tokens(a.seq);
        if (a.in_prompt()) {
            const auto & prompt = a.req->prompt_;
            toks.insert(toks.end(), prompt.begin() + a.n_prompt_done, prompt.begin() + a.n_prompt_done + a.n_in_batch);
            a.n_prompt_done += a.n_in_batch;
            a.req->prompt_done_.store(static_cast<int32_t>(a.n_prompt_done));
            step_prompt_tokens_ += a.n_in_batch;
        } else if (a.n_in_batch > 0) {
            toks.push_back(a.next);
        }
        bool keep = true;
        if (a.i_logits >= 0) {
            if (a.t_first == Clock::time_point{}) fork_branches(a);
            const int32_t before = a.req->stats_.predicted_tokens;
            try {
                a.guess = a.draft.empty() ? LLAMA_TOKEN_NULL : a.draft[0];
                keep = sample(a, a.i_logits);
                if (!a.draft.empty()) keep = verify_draft(a, keep);
            } catch (const std::exception & e) {
                // This request's sampler failed (a grammar that rejects the text its trigger
                // replays, say): it fails alone; the others in the batch go on.
                finish(a, StopReason::Failed, e.what());
                keep = false;
            }
            step_generated_ += a.req->stats_.predicted_tokens - before;
        }
        it = keep ? std::next(it) : active_.erase(it);
    }
    ++step_decodes_;
}

// Adds the step's work to the counters (a step that decoded nothing adds nothing).
void Engine::publish() {
    if (step_decodes_ == 0) return;
    std::lock_guard<std::mutex> lk(mu_);
    counters_.prompt_tokens_evaluated += step_prompt_tokens_;
    counters_.tokens_generated += step_generated_;
    counters_.decode_calls += step_decodes_;
    if (seq_runs_ > 0) {
        counters_.generation_steps += 1;
        counters_.generation_seq_runs += seq_runs_;
    }
    step_prompt_tokens_ = step_generated_ = step_decodes_ = 0;
}

}  // namespace lmfast
