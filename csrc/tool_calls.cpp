#include "tool_calls.h"

#include <algorithm>
#include <cctype>
#include <exception>

#include "chat.h"
#include "common.h"
#include "engine.h"
#include "errors.h"
#include "model.h"

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

void set_tool_call_sampling(const Model & model, bool lazy, const std::vector<std::pair<int, std::string>> & triggers,
                            const std::vector<std::string> & preserved, const std::string & generation_prompt,
                            GenerationParams & params) {
    auto single_token = [&](const std::string & text) -> llama_token {
        const std::vector<llama_token> ids = model.tokenize(text, /*add_special=*/false, /*parse_special=*/true);
        return ids.size() == 1 ? ids[0] : LLAMA_TOKEN_NULL;
    };
    for (const std::string & text : preserved) {
        const llama_token t = single_token(text);
        if (t != LLAMA_TOKEN_NULL) params.preserved_tokens.push_back(t);
    }
    SamplingParams & s = params.sampling;
    s.grammar_lazy = lazy;
    if (!lazy && !generation_prompt.empty()) {
        const std::vector<llama_token> ids = model.tokenize(generation_prompt, /*add_special=*/false, /*parse_special=*/true);
        for (size_t i = 0; i < ids.size(); ++i) {
            // A tokenizer may put a space before a leading control token that the text lacks.
            const std::string piece = model.token_to_piece(ids[i], true);
            if (i == 0 && !piece.empty() && std::isspace(static_cast<unsigned char>(piece[0])) &&
                !std::isspace(static_cast<unsigned char>(generation_prompt[0]))) {
                continue;
            }
            s.grammar_prefill.push_back(ids[i]);
        }
    }
    for (const auto & [type, value] : triggers) {
        switch (type) {
            case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:
            case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: {
                const llama_token t = single_token(value);
                const auto & keep = params.preserved_tokens;
                if (t != LLAMA_TOKEN_NULL && std::find(keep.begin(), keep.end(), t) != keep.end()) {
                    s.grammar_trigger_tokens.push_back(t);
                } else if (type == COMMON_GRAMMAR_TRIGGER_TYPE_WORD) {
                    s.grammar_trigger_patterns.push_back(regex_escape(value));
                } else {
                    throw InvalidArgument("grammar trigger token '" + value + "' is not one token of this model");
                }
                break;
            }
            case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:
                s.grammar_trigger_patterns.push_back(value);
                break;
            case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL:
                if (value.empty()) {
                    s.grammar_trigger_patterns.push_back("^$");
                } else {
                    s.grammar_trigger_patterns.push_back((value.front() == '^' ? "" : "^") + value +
                                                         (value.back() == '$' ? "" : "$"));
                }
                break;
            default:
                throw InvalidArgument("unknown grammar trigger type " + std::to_string(type));
        }
    }
}

}  // namespace lmfast
