// Tool calls in generated text: llama.cpp's chat-format parser (the one chat_render.h's
// render_chat_json sends for the template) applied to what a prediction produced.
//
// Parsing runs in this process: it is llama.cpp's own code over model output, not template code,
// and a parser that cannot be loaded or fails on the text is reported, never fatal.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace lmfast {

struct ParsedToolCall {
    std::string name;
    std::string arguments;  // a JSON object, as text
    std::string id;         // "" when the format has none
};

struct ParsedChatOutput {
    std::string content;
    std::string reasoning;
    std::vector<ParsedToolCall> tool_calls;
    std::string error;  // "" when the text parsed
};

// `parser`, `format` and `generation_prompt` are a ChatFormat's (chat_prompt.h).
ParsedChatOutput parse_chat_output(const std::string & text, const std::string & parser, int format,
                                   const std::string & generation_prompt);

}  // namespace lmfast
