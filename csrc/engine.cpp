#include "engine.h"

#include <algorithm>
#include <array>
#include <future>
#include <cstdio>

#include "common.h"
#include "errors.h"
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

ContextOverflow parse_context_overflow(const std::string & name) {
    if (name == "stopAtLimit") return ContextOverflow::StopAtLimit;
    if (name == "truncateMiddle") return ContextOverflow::TruncateMiddle;
    if (name == "rollingWindow") return ContextOverflow::RollingWindow;
    throw InvalidArgument("unknown context overflow policy '" + name +
                          "' (stopAtLimit, truncateMiddle or rollingWindow)");
}

// A persistent pool of compute threads for the CPU backend. Without one, ggml
// starts and joins its worker threads on every llama_decode call. Looked up through
// the backend registry, as llama-bench does, so that it also works when the CPU
// backend is a dynamically loaded variant.
template <typename F>
static F * cpu_proc(const char * name) {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return nullptr;
    return reinterpret_cast<F *>(ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), name));
}

static ggml_threadpool * new_threadpool(int32_t n_threads) {
    auto * fn = cpu_proc<decltype(ggml_threadpool_new)>("ggml_threadpool_new");
    if (!fn) return nullptr;
    ggml_threadpool_params tpp = ggml_threadpool_params_default(n_threads);
    return fn(&tpp);
}

static void free_threadpool(ggml_threadpool * tp) {
    if (!tp) return;
    if (auto * fn = cpu_proc<decltype(ggml_threadpool_free)>("ggml_threadpool_free")) fn(tp);
}

// ---------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------

Request::Request(std::vector<llama_token> prompt, GenerationParams params, bool stream)
    : prompt_(std::move(prompt)), params_(std::move(params)), stream_(stream), t_submit_(Clock::now()) {}

bool Request::wait_text(std::string & out, int32_t & n_tokens, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, timeout, [&] { return done_ || !pending_.empty(); });
    if (!pending_.empty()) {
        out.swap(pending_);
        pending_.clear();
        n_tokens = pending_tokens_;
        pending_tokens_ = 0;
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

void Request::emit(const std::string & text, int32_t n_tokens) {
    if (text.empty()) return;
    {
        std::lock_guard<std::mutex> lk(mu_);
        text_ += text;
        if (stream_) {
            pending_ += text;
            pending_tokens_ += n_tokens;
        }
    }
    if (stream_) cv_.notify_all();
}

void Request::finish(StopReason reason, const std::string & error) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (done_) return;
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
                      params_.n_ctx, params_.n_seq, kv / (1u << 30), static_cast<double>(avail) / (1u << 30));
        throw ModelLoadError(msg);
    }
}

Engine::Engine(std::shared_ptr<Model> model, const EngineParams & params)
    : model_(std::move(model)), params_(params), cache_(std::max(1, params.n_seq)) {
    if (params_.n_seq < 1 || params_.n_seq > 256) throw InvalidArgument("the number of parallel sequences must be 1..256");
    if (params_.n_ctx < 16) throw InvalidArgument("context length must be at least 16 tokens");
    if (params_.n_batch < 1 || params_.n_ubatch < 1) throw InvalidArgument("batch sizes must be positive");

    n_threads_ = params_.n_threads > 0 ? params_.n_threads : std::max(1, common_cpu_get_num_math());
    llama_context_params cp = llama_context_default_params();
    // One KV stream per sequence, each of the full context length: a token attends only
    // to its own conversation's cells. (A unified cache shares cells between sequences,
    // but then every token pays attention over every cached conversation: decoding was
    // 25-30 % slower with a few long conversations cached.) Memory: n_ctx x n_seq cells.
    if (static_cast<uint64_t>(params_.n_ctx) * static_cast<uint64_t>(params_.n_seq) > (1ull << 31)) {
        throw InvalidArgument("context length " + std::to_string(params_.n_ctx) + " x " + std::to_string(params_.n_seq) +
                              " parallel sequences is too large (at most 2^31 cells)");
    }
    cp.n_ctx = static_cast<uint32_t>(params_.n_ctx) * static_cast<uint32_t>(params_.n_seq);
    cp.n_batch = params_.n_batch;
    cp.n_ubatch = std::min(params_.n_ubatch, params_.n_batch);
    cp.n_seq_max = params_.n_seq;
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
    ctx_ = llama_init_from_model(model_->get(), cp);
    if (!ctx_) {
        throw ModelLoadError("could not create a llama.cpp context of " + std::to_string(params_.n_ctx) +
                             " tokens (out of memory, or an unsupported setting such as a quantized V cache "
                             "without flash attention)");
    }
    // llama.cpp pads each stream (to 256 cells); the window a request may use is
    // still the context length that was asked for.
    n_ctx_ = std::min<int32_t>(params_.n_ctx, static_cast<int32_t>(llama_n_ctx_seq(ctx_)));
    {
        const llama_model * mdl = model_->get();
        const double head_dim = static_cast<double>(llama_model_n_embd(mdl)) / std::max(1, llama_model_n_head(mdl));
        bytes_per_cell_ = 2.0 * llama_model_n_layer(mdl) * llama_model_n_head_kv(mdl) * head_dim * 2.0;
    }
    threadpool_ = new_threadpool(cp.n_threads);
    if (cp.n_threads_batch != cp.n_threads) threadpool_batch_ = new_threadpool(cp.n_threads_batch);
    if (threadpool_) llama_attach_threadpool(ctx_, threadpool_, threadpool_batch_);
    batch_ = llama_batch_init(params_.n_batch, 0, 1);
    last_done_ns_.store(Clock::now().time_since_epoch().count());
    thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
    shutdown();
    llama_batch_free(batch_);
    if (ctx_) llama_free(ctx_);
    free_threadpool(threadpool_batch_);
    free_threadpool(threadpool_);
}

bool Engine::running() const {
    std::lock_guard<std::mutex> lk(mu_);
    return !stop_;
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

std::shared_ptr<Request> Engine::submit(std::vector<llama_token> prompt, GenerationParams params, bool stream) {
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
    if (!params.sampling.grammar.empty()) {
        // Parse it here so that a bad grammar is the caller's error, not a failed request.
        make_grammar(params.sampling, model_->vocab());
    }
    auto req = std::make_shared<Request>(std::move(prompt), std::move(params), stream);
    req->n_keep_ = n_keep;
    req->stats_.prompt_tokens_dropped = n_dropped;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) throw ModelUnloaded("the model has been unloaded");
        queue_.push_back(req);
        ++counters_.requests;
        ++in_flight_;
    }
    cv_.notify_all();
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
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return stop_ || !queue_.empty() || !active_.empty() || !jobs_.empty(); });
            if (stop_) break;
        }
        // Debug jobs run between requests: none is admitted while one waits.
        bool jobs_waiting = false;
        while (active_.empty()) {
            std::function<void()> job;
            {
                std::lock_guard<std::mutex> lk(mu_);
                if (jobs_.empty()) break;
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
        }
        {
            std::lock_guard<std::mutex> lk(mu_);
            jobs_waiting = !jobs_.empty();
        }
        // Admit queued requests while sequences are free, in arrival order, except those
        // that wait for another request to evaluate the prefix they share (waits()).
        for (size_t next = 0; !jobs_waiting;) {
            std::shared_ptr<Request> req;
            {
                std::lock_guard<std::mutex> lk(mu_);
                if (static_cast<int32_t>(active_.size()) >= cache_.n_seq()) break;
                for (; next < queue_.size() && waits(*queue_[next]); ++next) {
                    if (!queue_[next]->held_) counters_.shared_prefix_waits += 1;
                    queue_[next]->held_ = true;
                }
                if (next >= queue_.size()) break;
                req = queue_[next];
                queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(next));
            }
            admit(std::move(req));
        }
        try {
            step();
        } catch (const std::exception & e) {
            for (auto & a : active_) finish(*a, StopReason::Failed, e.what());
            active_.clear();
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

std::vector<std::vector<float>> Engine::eval_logits(const std::vector<std::vector<llama_token>> & seqs,
                                                    const std::vector<int32_t> & n_prefix) {
    const int32_t k = static_cast<int32_t>(seqs.size());
    if (k < 1 || k > params_.n_seq) {
        throw InvalidArgument("eval_logits takes 1.." + std::to_string(params_.n_seq) + " sequences");
    }
    if (n_prefix.size() != seqs.size()) throw InvalidArgument("eval_logits: one prefix length per sequence");
    int64_t n_first = 0;
    for (int32_t s = 0; s < k; ++s) {
        if (n_prefix[s] < 1 || n_prefix[s] > static_cast<int32_t>(seqs[s].size()) ||
            static_cast<int32_t>(seqs[s].size()) > n_ctx_) {
            throw InvalidArgument("eval_logits: each sequence needs 1 <= n_prefix <= size <= n_ctx");
        }
        model_->check_tokens(seqs[s]);
        n_first += n_prefix[s];
    }
    if (n_first > params_.n_batch) throw InvalidArgument("eval_logits: all prefixes must fit one batch");
    auto task = std::make_shared<std::packaged_task<std::vector<std::vector<float>>()>>([this, &seqs, &n_prefix, k] {
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (stop_) throw ModelUnloaded("the model has been unloaded");
        }
        const int32_t n_vocab = model_->n_vocab();
        llama_memory_t mem = llama_get_memory(ctx_);
        std::vector<std::vector<float>> out(k);
        auto clear = [&] {
            for (int32_t s = 0; s < k; ++s) {
                llama_memory_seq_rm(mem, s, -1, -1);
                cache_.tokens(s).clear();
            }
        };
        clear();
        auto run = [&](const std::vector<std::array<int32_t, 3>> & items) {
            // items: (sequence, first position, tokens); logits after the last token of each.
            batch_.n_tokens = 0;
            std::vector<std::pair<int32_t, int32_t>> outs;
            for (const auto & [s, p0, n_each] : items) {
                for (int32_t j = 0; j < n_each; ++j) {
                    const int32_t i = batch_.n_tokens++;
                    batch_.token[i] = seqs[s][p0 + j];
                    batch_.pos[i] = p0 + j;
                    batch_.n_seq_id[i] = 1;
                    batch_.seq_id[i][0] = s;
                    batch_.logits[i] = j + 1 == n_each;
                    if (j + 1 == n_each) outs.emplace_back(s, i);
                }
            }
            if (llama_decode(ctx_, batch_) != 0) throw std::runtime_error("eval_logits: llama_decode failed");
            for (const auto & [s, i] : outs) {
                const float * l = llama_get_logits_ith(ctx_, i);
                out[s].insert(out[s].end(), l, l + n_vocab);
            }
        };
        try {
            std::vector<std::array<int32_t, 3>> items;
            for (int32_t s = 0; s < k; ++s) items.push_back({s, 0, n_prefix[s]});
            run(items);
            for (int32_t t = 0;; ++t) {
                items.clear();
                for (int32_t s = 0; s < k; ++s) {
                    const int32_t p = n_prefix[s] + t;
                    if (p < static_cast<int32_t>(seqs[s].size())) items.push_back({s, p, 1});
                }
                if (items.empty()) break;
                run(items);
            }
        } catch (...) {
            clear();
            throw;
        }
        clear();
        return out;
    });
    auto fut = task->get_future();
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) throw ModelUnloaded("the model has been unloaded");
        jobs_.push_back([task] { (*task)(); });
    }
    cv_.notify_all();
    return fut.get();
}

// Copying a sequence moves n_cells cells out to a host buffer and back in; evaluating the
// shared prefix again costs n_tokens tokens. True when the copy is the cheaper. The copy ran
// at ~2 GB/s each way (1.8 MB of SmolLM2 cells out and in: 1.8 ms on the 2-core CI machine).
bool Engine::copy_pays(size_t n_cells, size_t n_tokens) const {
    const double bytes = bytes_per_cell_ * static_cast<double>(n_cells);
    return 2.0 * bytes / 2e9 < static_cast<double>(n_tokens) * prompt_sec_per_token_;
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
    const auto & prompt = req.prompt_;
    if (prompt.size() < 2) return false;
    const size_t cached = cache_.longest_cached(prompt);
    for (const auto & ap : active_) {
        const Active & a = *ap;
        if (!a.in_prompt()) continue;
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
        a->grammar = make_grammar(req->params_.sampling, model_->vocab());
        prime_penalties(a->sampler.get(), req->prompt_);
    } catch (const std::exception & e) {
        req->finish(StopReason::Failed, e.what());
        request_done();
        return;
    }
    const auto & prompt = req->prompt_;
    PrefixCache::Match m = cache_.acquire(prompt, [&](llama_seq_id src, size_t n_common) {
        return copy_pays(cache_.tokens(src).size(), n_common);
    });
    a->seq = m.seq;
    // At least the last prompt token is evaluated again: its logits give the first token.
    size_t keep = std::min(m.n_common, prompt.size() - 1);
    llama_memory_t mem = llama_get_memory(ctx_);
    auto & toks = cache_.tokens(a->seq);
    if (m.copy_from >= 0) {
        // Sequences live in separate KV streams. llama_memory_seq_cp would copy the whole
        // stream buffer, every cell, used or not; the sequence-state API copies only the
        // source's own cells. Then the tail beyond the shared prefix goes.
        llama_memory_seq_rm(mem, a->seq, -1, -1);
        const size_t size = llama_state_seq_get_size(ctx_, m.copy_from);
        state_buf_.resize(size);
        const auto & src = cache_.tokens(m.copy_from);
        if (llama_state_seq_get_data(ctx_, state_buf_.data(), size, m.copy_from) == size &&
            llama_state_seq_set_data(ctx_, state_buf_.data(), size, a->seq) == size) {
            toks.assign(src.begin(), src.end());
        } else {
            llama_memory_seq_rm(mem, a->seq, -1, -1);
            keep = 0;
        }
    }
    if (!llama_memory_seq_rm(mem, a->seq, static_cast<llama_pos>(keep), -1)) {
        // Some memories (recurrent, SWA) cannot drop a tail: start the sequence over.
        llama_memory_seq_rm(mem, a->seq, -1, -1);
        keep = 0;
    }
    toks.resize(keep);
    a->n_prompt_done = keep;
    req->stats_.prompt_tokens = static_cast<int32_t>(prompt.size());
    req->stats_.cached_tokens = static_cast<int32_t>(keep);
    req->stats_.queue_time = seconds(req->t_submit_, a->t_admit);
    {
        std::lock_guard<std::mutex> lk(mu_);
        counters_.prompt_tokens_cached += keep;
    }
    active_.push_back(std::move(a));
}

void Engine::finish(Active & a, StopReason reason, const std::string & error) {
    if (reason != StopReason::Failed && reason != StopReason::StopString) {
        // Text held back for an undecided stop string or an incomplete character is final now.
        std::string tail = a.stops.push(a.utf8.flush()).emit;
        tail += a.stops.flush();
        a.req->emit(tail, a.n_unemitted);
        a.n_unemitted = 0;
    }
    const auto now = Clock::now();
    RequestStats & st = a.req->stats_;
    if (a.t_first != Clock::time_point{}) st.generation_time = seconds(a.t_first, now);
    else st.prompt_eval_time = seconds(a.t_admit, now);
    llama_memory_t mem = llama_get_memory(ctx_);
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
    a.req->finish(reason, error);
    request_done();
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
    const auto & keep = r.params_.preserved_tokens;
    const bool special = !keep.empty() && std::find(keep.begin(), keep.end(), tok) != keep.end();
    StopMatcher::Result sr = a.stops.push(a.utf8.push(model_->token_to_piece(tok, special)));
    a.n_unemitted++;
    if (!sr.emit.empty()) {
        r.emit(sr.emit, a.n_unemitted);
        a.n_unemitted = 0;
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
    // Cancelled requests leave before any work is spent on them.
    for (auto it = active_.begin(); it != active_.end();) {
        if ((*it)->req->cancelled()) {
            finish(**it, StopReason::UserStopped);
            it = active_.erase(it);
        } else {
            ++it;
        }
    }
    if (active_.empty()) return;

    Clock::time_point t_decode;
    for (;;) {
        // Build one batch: first the next token of every generating request (their
        // latency matters most), then prompt chunks in arrival order.
        batch_.n_tokens = 0;
        auto add = [&](llama_token t, llama_pos pos, llama_seq_id seq, bool logits) {
            const int32_t i = batch_.n_tokens++;
            batch_.token[i] = t;
            batch_.pos[i] = pos;
            batch_.n_seq_id[i] = 1;
            batch_.seq_id[i][0] = seq;
            batch_.logits[i] = logits;
            return i;
        };
        decoding_.clear();
        for (auto it = active_.begin(); it != active_.end();) {
            Active & a = **it;
            a.i_logits = -1;
            a.n_in_batch = 0;
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
            a->i_logits = add(a->next, static_cast<llama_pos>(cache_.tokens(a->seq).size()), a->seq, true);
            a->n_in_batch = 1;
            if (k == 0 || decoding_[k - 1]->seq + 1 != a->seq) ++seq_runs_;
        }
        for (auto & ap : active_) {
            Active & a = *ap;
            if (!a.in_prompt()) continue;
            const int32_t room = params_.n_batch - batch_.n_tokens;
            if (room <= 0) break;
            const auto & prompt = a.req->prompt_;
            const size_t take = std::min<size_t>(room, prompt.size() - a.n_prompt_done);
            for (size_t j = 0; j < take; ++j) {
                const size_t k = a.n_prompt_done + j;
                const bool last = k + 1 == prompt.size();
                const int32_t i = add(prompt[k], static_cast<llama_pos>(k), a.seq, last);
                if (last) a.i_logits = i;
            }
            a.n_in_batch = static_cast<int32_t>(take);
        }
        if (batch_.n_tokens == 0) return;

        t_decode = Clock::now();
        const int32_t ret = llama_decode(ctx_, batch_);
        if (ret == 1) {
            // No KV slot for the batch. Each sequence has its own stream and no request
            // exceeds it, so evicting other conversations would not help: stop the newest
            // request (llama.cpp restored the memory) and retry the others.
            Active & newest = *active_.back();
            finish(newest, StopReason::Failed, "no room in the KV cache for this request");
            active_.pop_back();
            if (active_.empty()) return;
            continue;  // rebuild and retry
        }
        if (ret != 0) {
            const std::string msg = "llama_decode failed with code " + std::to_string(ret);
            for (auto & a : active_) {
                if (a->n_in_batch > 0) finish(*a, StopReason::Failed, msg);
            }
            active_.remove_if([](const std::unique_ptr<Active> & a) { return a->n_in_batch > 0; });
            return;
        }
        break;
    }

    if (batch_.n_tokens >= 16) {
        // Prompt-sized batch: update the per-token cost estimate used by admit().
        llama_synchronize(ctx_);
        const double per_token = seconds(t_decode, Clock::now()) / batch_.n_tokens;
        prompt_sec_per_token_ = 0.8 * prompt_sec_per_token_ + 0.2 * per_token;
    }

    // The batch is in the KV cache now: record it, then sample where logits were asked for.
    uint64_t n_prompt_eval = 0, n_gen = 0;
    for (auto it = active_.begin(); it != active_.end();) {
        Active & a = **it;
        auto & toks = cache_.tokens(a.seq);
        if (a.in_prompt()) {
            const auto & prompt = a.req->prompt_;
            toks.insert(toks.end(), prompt.begin() + a.n_prompt_done, prompt.begin() + a.n_prompt_done + a.n_in_batch);
            a.n_prompt_done += a.n_in_batch;
            n_prompt_eval += a.n_in_batch;
        } else if (a.n_in_batch > 0) {
            toks.push_back(a.next);
        }
        bool keep = true;
        if (a.i_logits >= 0) {
            const int32_t before = a.req->stats_.predicted_tokens;
            try {
                keep = sample(a, a.i_logits);
            } catch (const std::exception & e) {
                // This request's sampler failed (a grammar that rejects the text its trigger
                // replays, say): it fails alone; the others in the batch go on.
                finish(a, StopReason::Failed, e.what());
                keep = false;
            }
            n_gen += a.req->stats_.predicted_tokens - before;
        }
        it = keep ? std::next(it) : active_.erase(it);
    }
    std::lock_guard<std::mutex> lk(mu_);
    counters_.prompt_tokens_evaluated += n_prompt_eval;
    counters_.tokens_generated += n_gen;
    counters_.decode_calls += 1;
    if (seq_runs_ > 0) {
        counters_.generation_steps += 1;
        counters_.generation_seq_runs += seq_runs_;
    }
}

}  // namespace lmfast
