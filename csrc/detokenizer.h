// Token bytes to text that is safe to hand to Python: never half a UTF-8
// character, and never text that may turn out to be the start of a stop string.
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

}  // namespace lmfast
