// The limits and outcomes of untrusted work (chat templates from model files).
//
// llama.cpp's Jinja engine cannot reach Python objects, files or the environment (it only knows
// the values passed in and its own built-ins), but it has no limits: a template can loop for
// hours (nested range() loops), build gigabyte strings ('a' * 10**9), or recurse until the stack
// overflows (a recursive macro, or thousands of nested brackets for the parser) -- and a stack
// overflow kills the whole process. So every parse and render runs in the template worker, a
// process of its own (template_host.h, template_worker.cpp) with an address-space limit, a
// deadline and a cap on its output, an empty environment, and no files, sockets or processes
// once its vocabulary is read (worker_lockdown.h: seccomp, no_new_privs); whatever happens to it (exception, signal, timeout, memory)
// comes back to the parent as one of the outcomes below. There is no in-process fallback: a
// build without the worker fails the load (model.cpp).
#pragma once

#include <cstddef>
#include <new>
#include <stdexcept>
#include <string>

namespace lmfast {

// Runs untrusted work inside the template worker and
// sorts its outcome: 'O' with fn's result, 'M' when it ran out of memory, 'E' with the message
// of anything else it threw.
template <typename F> char run_capturing(F && fn, std::string & out) {
    out.clear();
    try {
        out = fn();
        return 'O';
    } catch (const std::bad_alloc &) {
    } catch (const std::length_error &) {
    } catch (const std::exception & e) {
        try {
            out = e.what();
        } catch (...) {
            out.clear();
        }
        return 'E';
    } catch (...) {
        out = "unknown error";
        return 'E';
    }
    out.clear();
    return 'M';
}

struct SandboxLimits {
    double timeout_s = 10.0;              // wall clock, measured by the parent
    size_t memory_bytes = 1ull << 30;     // extra address space the worker may map
    size_t max_output_bytes = 64u << 20;  // larger results are cut off with an error
};

struct SandboxResult {
    enum Status { Ok, Error, OutOfMemory, Crashed, Timeout, TooLarge, Unavailable } status = Unavailable;
    std::string output;  // fn's result (Ok) or the exception's message (Error)
    std::string detail;  // for Crashed / Unavailable: what happened
};

// Limits from the environment: LMFAST_TEMPLATE_TIMEOUT (seconds), LMFAST_TEMPLATE_MEMORY_MB,
// LMFAST_TEMPLATE_MAX_OUTPUT_MB; defaults as above.
SandboxLimits template_limits();

// A one-line description of a non-Ok result, for error messages.
std::string describe(const SandboxResult & r, const SandboxLimits & limits);

}  // namespace lmfast
