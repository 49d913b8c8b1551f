#include "tool_calls.h"

#include <exception>

#include "chat.h"
#include "common.h"

namespace lmfast {

ParsedChatOutput parse_chat_output(const std::string & text, const std::string & parser, int format,
                                   const std::string & generation_prompt, bool partial) {
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
        const common_chat_msg msg = common_chat_parse(text, partial, params);
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

std::vector<ToolCallDelta> CallStreamer::look(const std::string & text, const std::string & parser, int format,
                                              const std::string & generation_prompt) {
    std::vector<ToolCallDelta> out;
    if (text.size() == parsed_size_) return out;
    parsed_size_ = text.size();
    const ParsedChatOutput parsed = parse_chat_output(text, parser, format, generation_prompt, true);
    if (!parsed.error.empty()) return out;  // not readable yet: the next look, or the final parse
    for (size_t k = 0; k < parsed.tool_calls.size(); ++k) {
        const ParsedToolCall & c = parsed.tool_calls[k];
        if (k == sent_.size()) {
            if (c.name.empty()) break;
            out.push_back({static_cast<int32_t>(k), c.id, c.name, "", true});
            sent_.emplace_back();
        }
        std::string & sent = sent_[k];
        // Only growth is sent: a text that does not extend what went out waits for the final parse.
        if (c.arguments.size() > sent.size() && c.arguments.compare(0, sent.size(), sent) == 0) {
            out.push_back({static_cast<int32_t>(k), "", "", c.arguments.substr(sent.size()), false});
            sent = c.arguments;
        }
    }
    return out;
}

}  // namespace lmfast
