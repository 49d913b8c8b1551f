#include "cpu_share.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <vector>

namespace lmfast {

namespace {

using Clock = std::chrono::steady_clock;

// Sampled this often: /proc/stat counts 10 ms ticks, so 250 ms on 2 CPUs is 50 ticks.
constexpr std::chrono::milliseconds kInterval(250);
// A CPU counts as free from 0.85 of one: daemons' background noise does not cost a thread.
constexpr double kSlack = 0.15;

int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

// The system's busy CPU seconds since boot, from /proc/stat's first line: user, system, irq,
// softirq and steal ticks (not nice, idle or iowait; guest time is already in user).
bool system_busy(double & seconds) {
    std::FILE * f = std::fopen("/proc/stat", "r");
    if (!f) return false;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    const int got = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle,
                                &iowait, &irq, &softirq, &steal);
    std::fclose(f);
    if (got < 4) return false;
    const double tick = 1.0 / static_cast<double>(std::max(1L, ::sysconf(_SC_CLK_TCK)));
    seconds = static_cast<double>(user + system + irq + softirq + steal) * tick;
    return true;
}

// Before a first interval is measured: the CPUs not taken by the threads runnable right now
// (/proc/loadavg's fourth field counts them, the reader included). The load averages would lag
// by a minute, counting this process's own earlier work as competition.
double initial_free(int32_t n_cpus) {
    double l1 = 0, l5 = 0, l15 = 0;
    int running = 0, total = 0;
    std::FILE * f = std::fopen("/proc/loadavg", "r");
    const bool ok = f && std::fscanf(f, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &running, &total) == 5;
    if (f) std::fclose(f);
    return ok ? std::max(0.0, static_cast<double>(n_cpus) - std::max(0, running - 1)) : n_cpus;
}

double process_cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto sec = [](const timeval & t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
    return sec(ru.ru_utime) + sec(ru.ru_stime);
}

// One process-wide sampler: every engine's CpuShare reads the same measurement.
struct Sampler {
    std::mutex mu;
    std::vector<CpuShare *> shares;
    Clock::time_point t_last{};
    double busy_last = -1, self_last = 0;
    double free_cpus = 0;  // smoothed: CPUs other processes leave free
    bool ok = true;
    int32_t n_cpus = 1;

    // CPUs left free by other processes, sampled at most every kInterval; < 0 when unknown.
    double free_now() {
        if (!ok) return -1;
        const auto now = Clock::now();
        if (busy_last >= 0 && now - t_last < kInterval) return free_cpus;
        double busy = 0;
        if (!system_busy(busy)) {
            ok = false;
            return -1;
        }
        const double self = process_cpu_seconds();
        if (busy_last < 0) {
            free_cpus = initial_free(n_cpus);  // until a first interval is measured
        } else {
            const double wall = std::chrono::duration<double>(now - t_last).count();
            const double others = std::max(0.0, (busy - busy_last) - (self - self_last)) / wall;
            free_cpus = 0.5 * free_cpus + 0.5 * std::max(0.0, n_cpus - others);
        }
        busy_last = busy;
        self_last = self;
        t_last = now;
        return free_cpus;
    }
};

Sampler & sampler() {
    static Sampler s;
    return s;
}

}  // namespace

// Engines of this process that stepped in the last two intervals (the caller included).
int32_t busy_engines(int64_t now) {
    int32_t n = 0;
    for (const CpuShare * c : sampler().shares) {
        n += now - c->last_step_ns_.load(std::memory_order_relaxed) < 2 * std::chrono::nanoseconds(kInterval).count();
    }
    return std::max(1, n);
}

CpuShare::CpuShare(int32_t n_max) : n_max_(std::max(1, n_max)) {
    Sampler & s = sampler();
    std::lock_guard<std::mutex> lk(s.mu);
    const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    s.n_cpus = n > 0 ? static_cast<int32_t>(n) : 1;
    s.shares.push_back(this);
}

CpuShare::~CpuShare() {
    Sampler & s = sampler();
    std::lock_guard<std::mutex> lk(s.mu);
    s.shares.erase(std::remove(s.shares.begin(), s.shares.end(), this), s.shares.end());
}

int32_t CpuShare::threads() {
    const int64_t now = now_ns();
    last_step_ns_.store(now, std::memory_order_relaxed);
    if (n_max_ == 1) return 1;
    Sampler & s = sampler();
    std::lock_guard<std::mutex> lk(s.mu);
    const double free_cpus = s.free_now();
    if (free_cpus < 0) return n_max_;
    const double share = free_cpus / busy_engines(now);
    return std::clamp(static_cast<int32_t>(std::floor(share + kSlack)), 1, n_max_);
}

}  // namespace lmfast
