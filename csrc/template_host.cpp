#include "template_host.h"

#include "model.h"

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "template_protocol.h"

#include <cerrno>
#include <csignal>
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lmfast {

namespace {

namespace proto = template_protocol;
using Clock = std::chrono::steady_clock;

constexpr const char * kWorkerName = "lmfast-template-worker";
// Reading the vocabulary is trusted work (the file's header was validated) and gets its own,
// generous deadline; the template limits apply from the worker's 'R' frame on.
constexpr double kVocabLoadTimeout = 120.0;

enum class Io { Ok, Closed, Timeout };

// Moves exactly n bytes to or from the socket before the deadline.
Io transfer(int fd, bool sending, char * p, size_t n, Clock::time_point deadline) {
    while (n > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return Io::Timeout;
        struct pollfd pfd { fd, static_cast<short>(sending ? POLLOUT : POLLIN), 0 };
        const int pr = poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
        if (pr < 0 && errno != EINTR) return Io::Closed;
        if (pr <= 0) continue;
        const ssize_t r = sending ? ::send(fd, p, n, proto::kSendFlags | MSG_DONTWAIT) : ::recv(fd, p, n, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return Io::Closed;
        }
        if (r == 0) return Io::Closed;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return Io::Ok;
}

Clock::time_point after(double seconds) {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

SandboxResult make(SandboxResult::Status status, std::string output = {}, std::string detail = {}) {
    SandboxResult r;
    r.status = status;
    r.output = std::move(output);
    r.detail = std::move(detail);
    return r;
}

}  // namespace

std::string TemplateHost::expected_worker_path() {
    if (const char * env = std::getenv("LMFAST_TEMPLATE_WORKER"); env && *env) return env;
    // Installed beside the extension module.
    Dl_info info {};
    if (!dladdr(reinterpret_cast<void *>(&TemplateHost::worker_path), &info) || !info.dli_fname) return kWorkerName;
    std::string dir(info.dli_fname);
    const size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? std::string(".") : dir.substr(0, slash);
    return dir + "/" + kWorkerName;
}

std::string TemplateHost::worker_path() {
    const std::string path = expected_worker_path();
    return access(path.c_str(), X_OK) == 0 ? path : std::string();
}

TemplateHost::TemplateHost(std::string worker, std::string model_path, SandboxLimits limits)
    : worker_(std::move(worker)), model_path_(std::move(model_path)), limits_(limits) {}

TemplateHost::~TemplateHost() {
    std::lock_guard<std::mutex> lock(mu_);
    stop_locked(true, nullptr);
}

int TemplateHost::pid() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(pid_);
}

SandboxResult TemplateHost::launch() {
    std::lock_guard<std::mutex> lock(mu_);
    stop_locked(true, nullptr);
    return spawn_locked();
}

SandboxResult TemplateHost::start() {
    std::lock_guard<std::mutex> lock(mu_);
    if (pid_ < 0) {
        SandboxResult spawned = spawn_locked();
        if (spawned.status != SandboxResult::Ok) return spawned;
    }
    return exchange_locked({}, true);
}

SandboxResult TemplateHost::start_locked() {
    SandboxResult spawned = spawn_locked();
    return spawned.status == SandboxResult::Ok ? exchange_locked({}, true) : spawned;
}

SandboxResult TemplateHost::spawn_locked() {
    int sv[2];
#ifdef SOCK_CLOEXEC
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
#else
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
#endif
        return make(SandboxResult::Unavailable, {}, std::string("socketpair: ") + std::strerror(errno));
    }
#ifndef SOCK_CLOEXEC
    fcntl(sv[0], F_SETFD, FD_CLOEXEC);
    fcntl(sv[1], F_SETFD, FD_CLOEXEC);
#endif
#ifdef SO_NOSIGPIPE
    const int one = 1;
    setsockopt(sv[0], SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    setsockopt(sv[1], SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, sv[1], 0);  // the worker's end becomes its fd 0
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    const std::string memory = std::to_string(limits_.memory_bytes);
    const std::string timeout = std::to_string(limits_.timeout_s);
    char * argv[] = {const_cast<char *>(worker_.c_str()), const_cast<char *>(model_path_.c_str()),
                     const_cast<char *>(memory.c_str()), const_cast<char *>(timeout.c_str()), nullptr};
    // An empty environment: the worker needs none (its limits come in argv), and the host's may
    // hold secrets (LMFAST_API_KEY, HF_TOKEN) that a template must not be able to reach.
    char * envp[] = {nullptr};
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, worker_.c_str(), &actions, nullptr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    ::close(sv[1]);
    if (rc != 0) {
        ::close(sv[0]);
        return make(SandboxResult::Unavailable, {}, "posix_spawn " + worker_ + ": " + std::strerror(rc));
    }
    pid_ = pid;
    fd_ = sv[0];
    return make(SandboxResult::Ok);
}

SandboxResult TemplateHost::render(const std::vector<ChatMessage> & messages, bool add_generation_prompt) {
    std::string request(1, add_generation_prompt ? '\1' : '\0');
    proto::put_u32(request, static_cast<uint32_t>(messages.size()));
    for (const ChatMessage & m : messages) {
        if (m.role.size() > UINT32_MAX || m.content.size() > UINT32_MAX) {
            return make(SandboxResult::Error, "a message is too long for the chat template (4 GiB at most)");
        }
        proto::put_bytes(request, m.role);
        proto::put_bytes(request, m.content);
    }
    std::lock_guard<std::mutex> lock(mu_);
    return request_locked(request);
}

SandboxResult TemplateHost::render_json(const std::string & json, const PromptTemplate * tmpl) {
    if (json.size() > UINT32_MAX) return make(SandboxResult::Error, "the chat is too long for the chat template (4 GiB at most)");
    std::string request(1, tmpl ? proto::kTemplateJsonRequest : proto::kJsonRequest);
    if (tmpl) {
        if (tmpl->source.size() > UINT32_MAX || tmpl->bos_token.size() > UINT32_MAX || tmpl->eos_token.size() > UINT32_MAX) {
            return make(SandboxResult::Error, "the prompt template is too long (4 GiB at most)");
        }
        proto::put_bytes(request, tmpl->source);
        proto::put_bytes(request, tmpl->bos_token);
        proto::put_bytes(request, tmpl->eos_token);
    }
    proto::put_bytes(request, json);
    std::lock_guard<std::mutex> lock(mu_);
    return request_locked(request);
}

SandboxResult TemplateHost::request_locked(const std::string & request) {
    int status = 0;
    if (pid_ >= 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
        // The worker died between requests (killed from outside: the OOM killer, a stray
        // signal); that was not this request's doing, so start a new one for it.
        pid_ = -1;
        stop_locked(false, nullptr);
    }
    if (pid_ < 0) {
        SandboxResult started = start_locked();
        if (started.status != SandboxResult::Ok) return started;
    }
    return exchange_locked(request, false);
}

SandboxResult TemplateHost::exchange_locked(const std::string & request, bool starting) {
    // The worker gets the template's time limit for the whole exchange (sending the request too,
    // so a worker that stopped reading cannot hold the caller).
    auto deadline = after(starting ? kVocabLoadTimeout : limits_.timeout_s);
    if (!request.empty()) {
        const Io io = transfer(fd_, true, const_cast<char *>(request.data()), request.size(), deadline);
        if (io != Io::Ok) {
            SandboxResult why = make(io == Io::Timeout ? SandboxResult::Timeout : SandboxResult::Crashed);
            stop_locked(io == Io::Timeout, &why);
            return why;
        }
    }
    for (;;) {
        char header[1 + sizeof(uint64_t)];
        Io io = transfer(fd_, false, header, sizeof header, deadline);
        uint64_t size = 0;
        std::memcpy(&size, header + 1, sizeof size);
        if (io == Io::Ok && size > limits_.max_output_bytes) {
            SandboxResult why = make(SandboxResult::TooLarge);
            stop_locked(true, nullptr);
            return why;
        }
        std::string payload(io == Io::Ok ? static_cast<size_t>(size) : 0, '\0');
        if (io == Io::Ok && size > 0) io = transfer(fd_, false, payload.data(), payload.size(), deadline);
        if (io != Io::Ok) {
            SandboxResult why = make(io == Io::Timeout ? SandboxResult::Timeout : SandboxResult::Crashed);
            stop_locked(io == Io::Timeout, &why);
            return why;
        }
        switch (header[0]) {
            case 'R':  // the vocabulary is loaded: the template's own limit starts now
                deadline = after(limits_.timeout_s);
                continue;
            case 'O': return make(SandboxResult::Ok, std::move(payload));
            case 'E':
                // At the start the worker exits after an error (it has no template to serve).
                if (starting) stop_locked(false, nullptr);
                return make(SandboxResult::Error, std::move(payload));
            case 'M': stop_locked(true, nullptr); return make(SandboxResult::OutOfMemory);
            default: {
                SandboxResult why = make(SandboxResult::Crashed, {}, "malformed answer");
                stop_locked(true, nullptr);
                return why;
            }
        }
    }
}

// Ends the worker and reaps it. With `why`, a worker that died on its own is described there:
// killed by the CPU limit means a timeout, any other signal a crash.
void TemplateHost::stop_locked(bool kill_first, SandboxResult * why) {
    if (fd_ >= 0) ::close(fd_);  // a live worker sees the end of its input and exits
    fd_ = -1;
    if (pid_ < 0) return;
    if (kill_first) kill(pid_, SIGKILL);
    int status = 0;
    pid_t w = 0;
    const auto give_up = after(2.0);
    while ((w = waitpid(pid_, &status, WNOHANG)) == 0 && Clock::now() < give_up) usleep(1000);
    if (w == 0) {
        kill(pid_, SIGKILL);
        do {
            w = waitpid(pid_, &status, 0);
        } while (w < 0 && errno == EINTR);
    }
    pid_ = -1;
    if (!why || w <= 0 || why->status == SandboxResult::Timeout) return;
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        if (sig == SIGXCPU) {
            why->status = SandboxResult::Timeout;
        } else {
            why->status = SandboxResult::Crashed;
            why->detail = "signal " + std::to_string(sig) + ", " + strsignal(sig);
        }
    } else if (WIFEXITED(status)) {
        why->status = SandboxResult::Crashed;
        why->detail = "exit status " + std::to_string(WEXITSTATUS(status));
    }
}

}  // namespace lmfast
