#include "log_filter.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "errors.h"
#include "llama.h"

namespace lmfast {

namespace {

std::atomic<int> g_log_level{GGML_LOG_LEVEL_ERROR};

void log_callback(ggml_log_level level, const char * text, void *) {
    static thread_local ggml_log_level last = GGML_LOG_LEVEL_INFO;
    if (level == GGML_LOG_LEVEL_CONT) level = last;  // continuation of the previous line
    last = level;
    if (static_cast<int>(level) >= g_log_level.load()) std::fputs(text, stderr);
}

int parse_log_level(const std::string & s) {
    if (s == "debug") return GGML_LOG_LEVEL_DEBUG;
    if (s == "info") return GGML_LOG_LEVEL_INFO;
    if (s == "warn" || s == "warning") return GGML_LOG_LEVEL_WARN;
    if (s == "error") return GGML_LOG_LEVEL_ERROR;
    if (s == "none" || s == "off") return GGML_LOG_LEVEL_ERROR + 1;
    throw InvalidArgument("unknown log level '" + s + "' (debug, info, warn, error, none)");
}

}  // namespace

void install_log_filter() {
    if (const char * lvl = std::getenv("LMFAST_LOG")) {
        try {
            g_log_level = parse_log_level(lvl);
        } catch (const InvalidArgument &) {
            // A typo in the environment must not make `import lmfast` fail.
        }
    }
    llama_log_set(log_callback, nullptr);
}

void set_log_level(const std::string & name) { g_log_level = parse_log_level(name); }

}  // namespace lmfast
