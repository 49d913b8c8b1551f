// Running untrusted work (chat templates from model files) in a forked child process.
//
// llama.cpp's Jinja engine cannot reach Python objects, files or the environment (it only knows
// the values passed in and its own built-ins), but it has no limits: a template can loop for
// hours (nested range() loops), build gigabyte strings ('a' * 10**9), or recurse until the stack
// overflows (a recursive macro, or thousands of nested brackets for the parser) -- and a stack
// overflow kills the whole process. So every parse and render of a template runs in a child
// forked for it: the child gets an address-space limit and a CPU limit, the parent waits with a
// deadline and a cap on the output, and whatever happens to the child (exception, signal,
// timeout, memory) comes back as an exception in the parent. The child only runs C++ (no
// Python), writes its result to a pipe and leaves with _exit().
#pragma once

#include <cstddef>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>

namespace lmfast {

// Runs untrusted work in the process that isolates it (forked child or template worker) and
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
    size_t memory_bytes = 1ull << 30;     // extra address space the child may map
    size_t max_output_bytes = 64u << 20;  // larger results are cut off with an error
};

struct SandboxResult {
    enum Status { Ok, Error, OutOfMemory, Crashed, Timeout, TooLarge, Unavailable } status = Unavailable;
    std::string output;  // fn's result (Ok) or the exception's message (Error)
    std::string detail;  // for Crashed / Unavailable: what happened
};

// Runs fn in a forked child under the limits. fn must not touch Python.
SandboxResult run_sandboxed(const std::function<std::string()> & fn, const SandboxLimits & limits);

// Limits from the environment: LMFAST_TEMPLATE_TIMEOUT (seconds), LMFAST_TEMPLATE_MEMORY_MB,
// LMFAST_TEMPLATE_MAX_OUTPUT_MB; defaults as above.
SandboxLimits template_limits();

// A one-line description of a non-Ok result, for error messages.
std::string describe(const SandboxResult & r, const SandboxLimits & limits);

}  // namespace lmfast
