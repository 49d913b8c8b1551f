// lmfast-template-worker: parses a model's chat template once and renders prompts with it on
// request, in a process of its own.
//
// Chat templates come from model files and are untrusted (see sandbox.h). Forking a child for
// every render isolates them but costs a fork of the whole host process per request (~9 ms on
// SmolLM2 under Python, on the time-to-first-token path) and re-parses the template each time.
// This worker is started once per loaded model with a clean address space (posix_spawn, not
// fork: nothing of the host's memory or threads comes along), reads only the model's vocabulary
// and metadata, and keeps the parsed template (and the last few templates that requests gave in
// its place: the promptTemplate prediction key, as untrusted as the file's). Its limits: an
// address-space cap (set after the vocabulary is loaded), a CPU-time cap renewed for each
// render, an empty environment and, once the vocabulary is read, no new files, processes or
// sockets (worker_lockdown.h: rlimits, no_new_privs, a seccomp allowlist); the host adds a wall-clock deadline and an output cap, and kills and restarts the
// worker after anything but a clean answer or a template error.
//
// Usage: lmfast-template-worker MODEL.gguf MEMORY_BYTES TIMEOUT_S, with the socket on fd 0.

#include "sandbox.h"
#include "template_protocol.h"
#include "vm_size.h"
#include "worker_lockdown.h"

#include "chat_render.h"
#include "model.h"  // ChatMessage
#include "llama.h"
#include "log.h"  // llama.cpp common

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

namespace proto = lmfast::template_protocol;

namespace {

constexpr int kFd = 0;

// CPU time for the next piece of untrusted work: what was used so far plus the budget. Past the
// soft limit the kernel sends SIGXCPU, which ends the worker (the host reports a timeout).
void renew_cpu_limit(double timeout_s) {
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    const double used = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    const rlim_t soft = static_cast<rlim_t>(std::ceil(used + timeout_s)) + 2;
    struct rlimit rl {};
    getrlimit(RLIMIT_CPU, &rl);
    if (rl.rlim_max != RLIM_INFINITY && soft > rl.rlim_max) return;
    rl.rlim_cur = soft;
    setrlimit(RLIMIT_CPU, &rl);
}

void reply(char status, const std::string & payload) {
    const std::string f = proto::frame(status, payload);
    if (!proto::send_all(kFd, f.data(), f.size())) _exit(0);  // the host is gone
}

// Runs fn and answers with its outcome (sandbox.h's run_capturing).
template <typename F> void answer(F && fn) {
    std::string out;
    const char status = lmfast::run_capturing(fn, out);
    reply(status, out);
}

bool read_u32(uint32_t & v) { return proto::recv_all(kFd, reinterpret_cast<char *>(&v), sizeof v); }

bool read_string(std::string & s) {
    uint32_t n = 0;
    if (!read_u32(n)) return false;
    s.resize(n);
    return n == 0 || proto::recv_all(kFd, s.data(), n);
}

// Templates given in place of the model's (promptTemplate), parsed once per source: a chat sends
// the same template with every turn. A handful is kept; the oldest goes first.
class OverrideTemplates {
public:
    const common_chat_templates * get(const llama_model * model, const std::string & source, const std::string & bos,
                                      const std::string & eos) {
        std::string key = source;
        key.append(1, '\0').append(bos).append(1, '\0').append(eos);
        for (const auto & [k, t] : parsed_) {
            if (k == key) return t.get();
        }
        common_chat_templates_ptr t = lmfast::init_override_templates(model, source, bos, eos);
        if (parsed_.size() >= kKeep) parsed_.erase(parsed_.begin());
        parsed_.emplace_back(std::move(key), std::move(t));
        return parsed_.back().second.get();
    }

private:
    static constexpr size_t kKeep = 8;
    std::vector<std::pair<std::string, common_chat_templates_ptr>> parsed_;
};

}  // namespace

int main(int argc, char ** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s MODEL.gguf MEMORY_BYTES TIMEOUT_S (internal to lmfast)\n", argv[0]);
        return 2;
    }
    // No PR_SET_PDEATHSIG: it fires when the *thread* that spawned the worker ends (a model
    // loaded from a short-lived thread, as the asyncio API does), not the host process. The
    // worker ends when its socket closes instead, which the host's exit does too, and a render
    // in progress is bounded by the CPU limit.
    std::signal(SIGPIPE, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);  // Ctrl-C reaches the whole process group; the host decides
    lmfast::lockdown::close_inherited_fds();
    const size_t memory_bytes = std::strtoull(argv[2], nullptr, 10);
    const double timeout_s = std::strtod(argv[3], nullptr);

    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    common_log_set_verbosity_thold(-1);

    // Trusted part: the host validated the file's header before starting the worker.
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        reply('E', std::string("could not read the model's vocabulary from ") + argv[1]);
        return 1;
    }
    reply('R', "");

    // Untrusted from here on.
    if (memory_bytes > 0) {
        const size_t vm = lmfast::current_vm_bytes();
        if (vm > 0) {
            struct rlimit rl { vm + memory_bytes, vm + memory_bytes };
            setrlimit(RLIMIT_AS, &rl);
        }
    }
    renew_cpu_limit(timeout_s);
    // worker_lockdown.h: no files, processes, sockets or privileges from here on. Where the
    // kernel refuses the filter (no seccomp) the worker still runs, with the limits above.
    lmfast::lockdown::apply();
    common_chat_templates_ptr templates;
    bool generic = false;
    answer([&] {
        templates = lmfast::init_chat_templates(model);
        generic = lmfast::renders_generically(templates.get());
        return std::string(common_chat_templates_source(templates.get()));
    });
    if (!templates) return 1;
    OverrideTemplates overrides;

    for (;;) {
        char add_generation_prompt = 0;
        if (!proto::recv_all(kFd, &add_generation_prompt, 1)) break;  // host closed
        if (add_generation_prompt == proto::kTemplateJsonRequest) {
            std::string source, bos, eos, request;
            if (!read_string(source) || !read_string(bos) || !read_string(eos) || !read_string(request)) break;
            renew_cpu_limit(timeout_s);  // parsing runs the template on sample chats too
            answer([&] { return lmfast::render_chat_json(overrides.get(model, source, bos, eos), request); });
            continue;
        }
        if (add_generation_prompt == proto::kJsonRequest) {
            std::string request;
            if (!read_string(request)) break;
            renew_cpu_limit(timeout_s);
            answer([&] { return lmfast::render_chat_json(templates.get(), request); });
            continue;
        }
        uint32_t count = 0;
        if (!read_u32(count)) break;
        std::vector<lmfast::ChatMessage> messages(count);
        bool ok = true;
        for (uint32_t i = 0; i < count && ok; ++i) ok = read_string(messages[i].role) && read_string(messages[i].content);
        if (!ok) break;
        renew_cpu_limit(timeout_s);
        answer([&] { return lmfast::render_chat(templates.get(), messages, add_generation_prompt != 0, generic); });
    }
    templates.reset();
    overrides = OverrideTemplates();
    llama_model_free(model);
    return 0;
}
