// Applies the template worker's lockdown (csrc/worker_lockdown.h) to this process, then tries
// what a template that took over the worker would try, printing "name result" per line:
// "ok" when the call worked, else the errno's name. tests/test_worker_lockdown.py reads it.
#include "worker_lockdown.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

void report(const char * name, long rc) {
    std::printf("%s %s\n", name, rc >= 0 ? "ok" : strerrorname_np(errno));
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char ** argv) {
    const char * path = argc > 1 ? argv[1] : "/etc/hostname";
    report("open_before", ::open(path, O_RDONLY));  // the vocabulary is read before the lockdown
    const std::string failed = lmfast::lockdown::apply();
    std::printf("apply %s\n", failed.empty() ? "ok" : failed.c_str());
    report("open", ::open(path, O_RDONLY));
    report("openat", ::openat(AT_FDCWD, path, O_RDONLY));
    report("creat", ::open("/tmp/lmfast-lockdown-probe", O_WRONLY | O_CREAT, 0600));
    report("socket", ::socket(AF_INET, SOCK_STREAM, 0));
    report("fork", static_cast<long>(::fork()));
    char * args[] = {const_cast<char *>("/bin/true"), nullptr};
    char * env[] = {nullptr};
    report("execve", ::execve("/bin/true", args, env));
    report("kill_parent", ::kill(::getppid(), 0));
    // What a render needs still works: memory, time, the CPU limit, writing to an open descriptor.
    std::vector<char> big(64u << 20, 'x');
    report("malloc", big[12345] == 'x' ? 0 : -1);
    std::time_t now = std::time(nullptr);
    char buf[64];
    report("strftime", std::strftime(buf, sizeof buf, "%Y", std::localtime(&now)) > 0 ? 0 : -1);
    struct rlimit rl {};
    getrlimit(RLIMIT_CPU, &rl);
    rl.rlim_cur = 100;
    report("setrlimit_cpu", setrlimit(RLIMIT_CPU, &rl));
    report("write", ::write(1, "", 0));
    return 0;
}
