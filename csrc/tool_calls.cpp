#include "tool_calls.h"

#include <exception>

#include "chat.h"
#include "common.h"

namespace lmfast {

ParsedChatOutput parse_chat_output(const std::string & text, const std::string & parser, int format,
                                   const std::string & generation_prompt) {
    ParsedChatOutput out;
    if (format < 0 || format >= COMMON_CHAT_FORMAT_COUNT) {
        out.content = text;
        out.error = "unknown chat format " + std::to_string(format);
        return out;
    }
    try {
        common_chat_parser_params params;
        params.format = static_cast<common_chat_format>(format);
        params.generation_prompt = generation_prompt;
        params.parse_tool_calls = true;
        if (!parser.empty()) params.parser.load(parser);
        const common_chat_msg msg = common_chat_parse(text, /*is_partial=*/false, params);
        out.content = msg.content;
        out.reasoning = msg.reasoning_content;
        for (const auto & c : msg.tool_calls) out.tool_calls.push_back({c.name, c.arguments, c.id});
    } catch (const std::exception & e) {
        out = ParsedChatOutput{};
        out.content = text;
        out.error = e.what();
    }
    return out;
}

}  // namespace lmfast
