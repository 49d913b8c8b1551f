// What the template worker gives up before it runs a template (template_worker.cpp).
//
// A chat template cannot reach files or the network through llama.cpp's Jinja engine, but the
// engine is a large C++ interpreter fed with untrusted text: should a template find a memory bug
// in it, the process it takes over can do no more than this:
//   - its environment is empty (template_host.cpp spawns it so: no LMFAST_API_KEY, no HF_TOKEN);
//   - descriptors other than 0-2 are closed at its start (the host may hold files opened without
//     O_CLOEXEC: model files, cache files), and RLIMIT_NOFILE then stops new ones;
//   - RLIMIT_NPROC 0 (no fork or thread), RLIMIT_FSIZE 0 (no file grows; SIGXFSZ is ignored so
//     a write fails with EFBIG instead of ending the worker);
//   - PR_SET_NO_NEW_PRIVS, then a seccomp filter that allows only the system calls a render makes
//     (memory, the socket on fd 0, time, its own limits and signals, exit) and answers every other
//     one with EPERM: open/openat/creat, execve, fork/clone, socket/connect, kill, ptrace and the
//     rest fail. EPERM rather than killing the process: library code that probes something
//     (localtime reading /etc/localtime for a template's strftime_now) degrades instead of dying.
// The list was taken with strace from renders of plain, tool-call and override templates on
// x86-64 (glibc 2.36). Linux only; elsewhere these are no-ops and the resource limits remain.
#pragma once

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

namespace lmfast::lockdown {

// Closes every descriptor above 2: run first thing, before the vocabulary is read.
inline void close_inherited_fds() {
#if defined(__linux__) && defined(SYS_close_range)
    if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0) return;
#endif
    const long max_fd = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max_fd > 0 && max_fd < 65536 ? max_fd : 65536); ++fd) ::close(static_cast<int>(fd));
}

inline void set_limit(int resource, rlim_t value) {
    struct rlimit rl { value, value };
    setrlimit(resource, &rl);
}

#ifdef __linux__

#if defined(__x86_64__)
constexpr unsigned kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr unsigned kAuditArch = AUDIT_ARCH_AARCH64;
#else
constexpr unsigned kAuditArch = 0;  // unknown: no filter (the other steps still apply)
#endif

// System calls the worker keeps. Each #ifdef: not every architecture has every call.
inline const long * allowed_syscalls(size_t & n) {
    static const long list[] = {
        SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_recvfrom, SYS_recvmsg, SYS_sendto, SYS_sendmsg,
        SYS_close, SYS_fstat, SYS_newfstatat, SYS_lseek,
        SYS_mmap, SYS_munmap, SYS_mremap, SYS_mprotect, SYS_brk, SYS_madvise,
        SYS_futex, SYS_getrusage, SYS_getrlimit, SYS_setrlimit, SYS_prlimit64,
        SYS_exit, SYS_exit_group, SYS_rt_sigreturn, SYS_rt_sigprocmask, SYS_rt_sigaction, SYS_sigaltstack,
        SYS_clock_gettime, SYS_clock_getres, SYS_gettimeofday, SYS_nanosleep, SYS_clock_nanosleep,
        SYS_sched_yield, SYS_getpid, SYS_gettid, SYS_getrandom,
#ifdef SYS_poll
        SYS_poll,
#endif
        SYS_ppoll,
#ifdef SYS_time
        SYS_time,
#endif
    };
    n = sizeof list / sizeof list[0];
    return list;
}

// Installs the filter; false (errno set) where the kernel refuses it. tgkill is allowed towards
// this process only (abort() raises SIGABRT with it); everything not listed gets EPERM.
inline bool install_seccomp() {
    if (kAuditArch == 0) return false;
    size_t n = 0;
    const long * allowed = allowed_syscalls(n);
    const __u32 self = static_cast<__u32>(getpid());
    std::vector<sock_filter> prog;
    auto add = [&](sock_filter f) { prog.push_back(f); };
    add(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
    add(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0));
    add(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));  // a foreign ABI (x86 int 0x80)
    add(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
#if defined(__x86_64__)
    add(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));  // the x32 ABI's numbers
    add(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
#endif
    for (size_t i = 0; i < n; ++i) {
        add(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<__u32>(allowed[i]), 0, 1));
        add(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    }
    add(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<__u32>(SYS_tgkill), 0, 4));
    add(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[0])));  // low half of tgid
    add(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, self, 0, 1));
    add(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    add(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));  // tgkill towards another process
    add(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));  // anything else
    sock_fprog fprog { static_cast<unsigned short>(prog.size()), prog.data() };
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) == 0;
}

#endif  // __linux__

// Everything above, in order; call it once the vocabulary is loaded (reading the model needs
// open and mmap of a file) and before the first template is parsed. Returns "" or what failed.
inline std::string apply() {
    std::signal(SIGXFSZ, SIG_IGN);
    set_limit(RLIMIT_FSIZE, 0);
    set_limit(RLIMIT_NPROC, 0);
    set_limit(RLIMIT_NOFILE, 3);
#ifdef __linux__
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return "PR_SET_NO_NEW_PRIVS failed";
    if (!install_seccomp() && kAuditArch != 0) return "the seccomp filter was refused";
#endif
    return "";
}

}  // namespace lmfast::lockdown
