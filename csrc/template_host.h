// The host side of the template worker (template_worker.cpp): one worker process per loaded
// model, started at load, kept for every render, restarted after a failure.
//
// Requests from several threads are served one at a time (a render takes well under a
// millisecond). Every exchange has the wall-clock deadline of SandboxLimits, and an answer larger
// than the output cap is refused; after a timeout, a crash, an oversized answer or running out of
// memory the worker is killed and the next render starts a fresh one. A template error (the
// template raised, e.g. on roles it does not support) leaves the worker running.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include <sys/types.h>

#include "sandbox.h"

namespace lmfast {

struct ChatMessage;
struct PromptTemplate;

class TemplateHost {
public:
    // The worker executable to use for models loaded from now on, or "" when it is missing or
    // not executable. LMFAST_TEMPLATE_WORKER, when set, names it instead of the file installed
    // beside the extension module.
    static std::string worker_path();
    // Where worker_path() looks (for error messages).
    static std::string expected_worker_path();

    TemplateHost(std::string worker, std::string model_path, SandboxLimits limits);
    ~TemplateHost();
    TemplateHost(const TemplateHost &) = delete;
    TemplateHost & operator=(const TemplateHost &) = delete;

    // Spawns the worker, which then reads the vocabulary on its own while the caller goes on
    // (loading the weights); Unavailable when it could not be spawned.
    SandboxResult launch();
    // Waits for the launched worker (launching one first if needed) to parse the template and
    // try it on sample chats; Ok with the template's source, or what went wrong.
    SandboxResult start();
    // Renders the prompt; starts a worker first when the last one was killed.
    SandboxResult render(const std::vector<ChatMessage> & messages, bool add_generation_prompt);
    // Answers a request of chat_render.h's render_chat_json (tools, tool calls) the same way;
    // with `tmpl`, rendered with that template instead of the model's.
    SandboxResult render_json(const std::string & request, const PromptTemplate * tmpl = nullptr);
    const SandboxLimits & limits() const { return limits_; }
    // The worker's process id (-1 when none runs); for tests.
    int pid();

private:
    SandboxResult spawn_locked();
    SandboxResult start_locked();
    SandboxResult exchange_locked(const std::string & request, bool starting);
    SandboxResult request_locked(const std::string & request);
    void stop_locked(bool kill_first, SandboxResult * why);

    const std::string worker_;
    const std::string model_path_;
    const SandboxLimits limits_;
    std::mutex mu_;
    pid_t pid_ = -1;
    int fd_ = -1;
};

}  // namespace lmfast
