// Token bytes to text that is safe to hand to Python: never half a UTF-8
// character, never text that may turn out to be the start of a stop string, and no tool-call
// syntax in streamed text.
#pragma once

#include <string>
#include <vector>

namespace lmfast {

// Buffers bytes until they form complete UTF-8 characters. Invalid sequences
// become U+FFFD rather than being passed on.
class Utf8Stream {
public:
    std::string push(const std::string & bytes);
    std::string flush();  // end of text: an incomplete trailing character is dropped

private:
    std::string pending_;
};

// Finds stop strings in streamed text. Text that could still be the beginning of
// a stop string is held back until it is decided.
class StopMatcher {
public:
    explicit StopMatcher(std::vector<std::string> stops);
    struct Result {
        std::string emit;     // text that is final
        bool stopped = false; // a stop string was found; emit ends before it
    };
    Result push(const std::string & text);
    std::string flush();  // end of generation: the held-back text is final

private:
    std::vector<std::string> stops_;
    std::string held_;
};

// Keeps tool-call syntax out of streamed text: text passes until one of a chat format's call
// markers (its trigger words, such as "<tool_call>") shows up, and nothing passes after it; a
// tail that could start a marker is held until the next text decides, as for stop strings.
// Generation goes on: the calls are parsed from the whole text when the request ends.
class CallFilter {
public:
    explicit CallFilter(std::vector<std::string> markers) : markers_(std::move(markers)) {}
    std::string push(const std::string & text);
    std::string flush();  // end of generation: held text that started no call is final
    bool in_call() const { return in_call_; }  // a marker was seen: the rest is call syntax

private:
    StopMatcher markers_;
    bool in_call_ = false;
};

}  // namespace lmfast
