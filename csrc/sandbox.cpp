#include "sandbox.h"

#include <cmath>
#include <cstdlib>

namespace lmfast {

namespace {

double env_double(const char * name, double dflt) {
    const char * v = std::getenv(name);
    if (!v || !*v) return dflt;
    char * end = nullptr;
    const double d = std::strtod(v, &end);
    return (end && *end == '\0' && std::isfinite(d) && d > 0) ? d : dflt;
}

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
        case SandboxResult::Crashed: return "it crashed the template worker (" + r.detail + ")";
        case SandboxResult::Timeout:
            return "it ran longer than the " + std::to_string(limits.timeout_s).substr(0, 5) +
                   " s allowed (LMFAST_TEMPLATE_TIMEOUT)";
        case SandboxResult::TooLarge:
            return "its output is larger than the " + std::to_string(limits.max_output_bytes >> 20) +
                   " MiB allowed (LMFAST_TEMPLATE_MAX_OUTPUT_MB)";
        case SandboxResult::Unavailable: return "the template worker could not be started (" + r.detail + ")";
    }
    return "unknown";
}

}  // namespace lmfast
