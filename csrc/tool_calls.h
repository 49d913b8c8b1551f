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
// `partial`: the text is a prefix of the output (a call still being written): a call's
// arguments are then the JSON so far, which later parses only extend.
ParsedChatOutput parse_chat_output(const std::string & text, const std::string & parser, int format,
                                   const std::string & generation_prompt, bool partial = false);

// What a streamed call adds since the last look: its first delta has the name (and the format's
// id, if any) and arguments "", later ones a piece of the arguments text.
struct ToolCallDelta {
    int32_t index = 0;
    std::string id, name, arguments;
    bool first = false;
};

// Streamed tool calls, parsed incrementally: each look parses the text so far as a partial
// output and gives what the calls gained. Consumer side (no engine thread time).
class CallStreamer {
public:
    std::vector<ToolCallDelta> look(const std::string & text, const std::string & parser, int format,
                                    const std::string & generation_prompt);

private:
    std::vector<std::string> sent_;  // each call's arguments text sent so far
    size_t parsed_size_ = 0;         // the text's size at the last look
};

}  // namespace lmfast
