#include "sandbox.h"

#include "log.h"  // llama.cpp common

#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vm_size.h"
#define LMFAST_HAVE_FORK 1
#endif

namespace lmfast {

namespace {

double env_double(const char * name, double dflt) {
    const char * v = std::getenv(name);
    if (!v || !*v) return dflt;
    char * end = nullptr;
    const double d = std::strtod(v, &end);
    return (end && *end == '\0' && std::isfinite(d) && d > 0) ? d : dflt;
}

#ifdef LMFAST_HAVE_FORK
void write_all(int fd, const char * p, size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) _exit(3);
        p += w;
        n -= static_cast<size_t>(w);
    }
}

[[noreturn]] void child_main(int fd, const std::function<std::string()> & fn, size_t vm_limit, double timeout_s) {
    // Default dispositions, so a fault ends the child instead of running the parent's handlers.
    std::signal(SIGSEGV, SIG_DFL);
    std::signal(SIGBUS, SIG_DFL);
    std::signal(SIGABRT, SIG_DFL);
    std::signal(SIGPIPE, SIG_DFL);
    std::signal(SIGINT, SIG_IGN);  // Ctrl-C reaches the whole process group; the parent decides
    // llama.cpp's common log hands lines to a worker thread, which does not exist in this child
    // (and whose mutex another thread may have held at the fork): log nothing here.
    common_log_set_verbosity_thold(-1);
    if (vm_limit > 0) {
        struct rlimit rl { vm_limit, vm_limit };
        setrlimit(RLIMIT_AS, &rl);
    }
    {
        // Backstop in case the parent goes away without killing the child.
        const rlim_t cpu = static_cast<rlim_t>(std::ceil(timeout_s)) + 2;
        struct rlimit rl { cpu, cpu + 1 };
        setrlimit(RLIMIT_CPU, &rl);
    }
    std::string out;
    const char status = run_capturing(fn, out);
    write_all(fd, &status, 1);
    write_all(fd, out.data(), out.size());
    _exit(0);
}
#endif

}  // namespace

SandboxLimits template_limits() {
    SandboxLimits l;
    l.timeout_s = env_double("LMFAST_TEMPLATE_TIMEOUT", l.timeout_s);
    l.memory_bytes = static_cast<size_t>(env_double("LMFAST_TEMPLATE_MEMORY_MB", l.memory_bytes / 1048576.0) * 1048576.0);
    l.max_output_bytes =
        static_cast<size_t>(env_double("LMFAST_TEMPLATE_MAX_OUTPUT_MB", l.max_output_bytes / 1048576.0) * 1048576.0);
    return l;
}

std::string describe(const SandboxResult & r, const SandboxLimits & limits) {
    switch (r.status) {
        case SandboxResult::Ok: return "ok";
        case SandboxResult::Error: return r.output;
        case SandboxResult::OutOfMemory:
            return "it needed more than the " + std::to_string(limits.memory_bytes >> 20) + " MiB of memory allowed";
        case SandboxResult::Crashed: return "it crashed the sandbox process (" + r.detail + ")";
        case SandboxResult::Timeout:
            return "it ran longer than the " + std::to_string(limits.timeout_s).substr(0, 5) +
                   " s allowed (LMFAST_TEMPLATE_TIMEOUT)";
        case SandboxResult::TooLarge:
            return "its output is larger than the " + std::to_string(limits.max_output_bytes >> 20) +
                   " MiB allowed (LMFAST_TEMPLATE_MAX_OUTPUT_MB)";
        case SandboxResult::Unavailable: return "the sandbox process could not be started (" + r.detail + ")";
    }
    return "unknown";
}

#ifdef LMFAST_HAVE_FORK
SandboxResult run_sandboxed(const std::function<std::string()> & fn, const SandboxLimits & limits) {
    SandboxResult res;
    int fds[2];
    if (pipe(fds) != 0) {
        res.detail = std::string("pipe: ") + std::strerror(errno);
        return res;
    }
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    const size_t vm_now = current_vm_bytes();
    const size_t vm_limit = vm_now > 0 ? vm_now + limits.memory_bytes : 0;
    const pid_t pid = fork();
    if (pid < 0) {
        res.detail = std::string("fork: ") + std::strerror(errno);
        ::close(fds[0]);
        ::close(fds[1]);
        return res;
    }
    if (pid == 0) {
        ::close(fds[0]);
        child_main(fds[1], fn, vm_limit, limits.timeout_s);
    }
    ::close(fds[1]);

    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::duration<double>(limits.timeout_s);
    std::string buf;
    bool eof = false;
    bool timed_out = false;
    bool too_large = false;
    char chunk[65536];
    while (!eof) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd p { fds[0], POLLIN, 0 };
        const int pr = poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
        if (pr < 0 && errno != EINTR) break;
        if (pr <= 0) continue;
        const ssize_t r = ::read(fds[0], chunk, sizeof chunk);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            break;
        }
        if (r == 0) {
            eof = true;
            break;
        }
        buf.append(chunk, static_cast<size_t>(r));
        if (buf.size() > limits.max_output_bytes + 1) {
            too_large = true;
            break;
        }
    }
    ::close(fds[0]);
    if (!eof) kill(pid, SIGKILL);
    int wstatus = 0;
    pid_t w;
    do {
        w = waitpid(pid, &wstatus, 0);
    } while (w < 0 && errno == EINTR);
    const bool reaped = w == pid;

    if (timed_out) {
        res.status = SandboxResult::Timeout;
    } else if (too_large) {
        res.status = SandboxResult::TooLarge;
    } else if (reaped && WIFSIGNALED(wstatus)) {
        const int sig = WTERMSIG(wstatus);
        if (sig == SIGXCPU || sig == SIGKILL) {
            res.status = SandboxResult::Timeout;
        } else {
            res.status = SandboxResult::Crashed;
            res.detail = std::string("signal ") + std::to_string(sig) + ", " + strsignal(sig);
        }
    } else if (buf.empty() || (reaped && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0)) {
        res.status = SandboxResult::Crashed;
        res.detail = reaped && WIFEXITED(wstatus) ? "exit status " + std::to_string(WEXITSTATUS(wstatus))
                                                  : std::string("no result");
    } else {
        const char st = buf[0];
        res.output = buf.substr(1);
        if (st == 'O') {
            if (res.output.size() > limits.max_output_bytes) {
                res.status = SandboxResult::TooLarge;
                res.output.clear();
            } else {
                res.status = SandboxResult::Ok;
            }
        } else if (st == 'M') {
            res.status = SandboxResult::OutOfMemory;
        } else {
            res.status = SandboxResult::Error;
        }
    }
    return res;
}
#else
SandboxResult run_sandboxed(const std::function<std::string()> & fn, const SandboxLimits &) {
    // No fork(): run in-process (no time or memory limits on this platform).
    SandboxResult res;
    try {
        res.output = fn();
        res.status = SandboxResult::Ok;
    } catch (const std::bad_alloc &) {
        res.status = SandboxResult::OutOfMemory;
    } catch (const std::exception & e) {
        res.status = SandboxResult::Error;
        res.output = e.what();
    }
    return res;
}
#endif

}  // namespace lmfast
