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

// `parser`, `format` and `generation_prompt` are the fields of render_chat_json's answer.
ParsedChatOutput parse_chat_output(const std::string & text, const std::string & parser, int format,
                                   const std::string & generation_prompt);

class Model;
struct GenerationParams;

// Applies the sampling half of render_chat_json's answer to a request: `triggers` are its
// (type, value) grammar triggers (llama.cpp's common_grammar_trigger_type), `preserved` the
// control-token texts that must show in the output. A trigger word that is one preserved control
// token becomes a token trigger, as in llama.cpp's server. A grammar that is not lazy starts with
// the template's `generation_prompt`, which is fed to it first. The grammar itself is set by the
// caller.
void set_tool_call_sampling(const Model & model, bool lazy, const std::vector<std::pair<int, std::string>> & triggers,
                            const std::vector<std::string> & preserved, const std::string & generation_prompt,
                            GenerationParams & params);

}  // namespace lmfast
