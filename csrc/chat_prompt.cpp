#include "chat_prompt.h"

#include <algorithm>
#include <cctype>

#include "chat.h"
#include "common.h"
#include "engine.h"
#include "errors.h"
#include "model.h"

namespace lmfast {

namespace {

llama_token single_token(const Model & model, const std::string & text) {
    const std::vector<llama_token> ids = model.tokenize(text, /*add_special=*/false, /*parse_special=*/true);
    return ids.size() == 1 ? ids[0] : LLAMA_TOKEN_NULL;
}

// The generation prompt as the grammar's first tokens. A tokenizer may put a space before a
// leading control token that the text lacks: that token is left out.
std::vector<llama_token> prefill_tokens(const Model & model, const std::string & generation_prompt) {
    std::vector<llama_token> out;
    const std::vector<llama_token> ids = model.tokenize(generation_prompt, /*add_special=*/false, /*parse_special=*/true);
    for (size_t i = 0; i < ids.size(); ++i) {
        const std::string piece = model.token_to_piece(ids[i], true);
        if (i == 0 && !piece.empty() && std::isspace(static_cast<unsigned char>(piece[0])) &&
            !std::isspace(static_cast<unsigned char>(generation_prompt[0]))) {
            continue;
        }
        out.push_back(ids[i]);
    }
    return out;
}

ChatFormat format_from_answer(const common_json & a) {
    ChatFormat f;
    f.format = a.value("format", 0);
    f.parser = a.value("parser", std::string());
    f.generation_prompt = a.value("generation_prompt", std::string());
    f.grammar = a.value("grammar", std::string());
    f.grammar_lazy = a.value("grammar_lazy", false);
    for (const auto & t : a.value("grammar_triggers", common_json::array())) {
        f.triggers.emplace_back(t.at("type").get<int>(), t.at("value").get<std::string>());
    }
    f.preserved = a.value("preserved_tokens", std::vector<std::string>());
    f.additional_stops = a.value("additional_stops", std::vector<std::string>());
    return f;
}

}  // namespace

ChatPrompt render_chat_prompt(const Model & model, const std::vector<ChatMessage> & messages) {
    return chat_prompt_from_text(model, model.apply_chat_template(messages, /*add_generation_prompt=*/true));
}

ChatPrompt render_chat_prompt_json(const Model & model, const std::string & request, const PromptTemplate * tmpl,
                                   bool with_tools) {
    const std::string answer = model.apply_chat_template_json(request, tmpl);
    common_json a;
    try {
        a = common_json::parse(answer);
    } catch (const std::exception & e) {
        throw TemplateError(std::string("the template worker's answer is not JSON: ") + e.what());
    }
    ChatPrompt p = chat_prompt_from_text(model, a.value("prompt", std::string()));
    if (with_tools) {
        auto f = std::make_shared<ChatFormat>(format_from_answer(a));
        resolve_chat_format(model, *f);
        p.format = std::move(f);
    }
    return p;
}

ChatPrompt chat_prompt_from_text(const Model & model, std::string text) {
    ChatPrompt p;
    p.tokens = model.tokenize(text, /*add_special=*/true, /*parse_special=*/true);
    p.text = std::move(text);
    return p;
}

void resolve_chat_format(const Model & model, ChatFormat & f) {
    for (const std::string & text : f.preserved) {
        const llama_token t = single_token(model, text);
        if (t != LLAMA_TOKEN_NULL) f.preserved_tokens.push_back(t);
    }
    if (!f.grammar_lazy && !f.generation_prompt.empty()) f.grammar_prefill = prefill_tokens(model, f.generation_prompt);
    const auto & keep = f.preserved_tokens;
    for (const auto & [type, value] : f.triggers) {
        switch (type) {
            case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:
            case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: {
                if (!value.empty()) f.call_markers.push_back(value);
                const llama_token t = single_token(model, value);
                if (t != LLAMA_TOKEN_NULL && std::find(keep.begin(), keep.end(), t) != keep.end()) {
                    f.trigger_tokens.push_back(t);
                } else if (type == COMMON_GRAMMAR_TRIGGER_TYPE_WORD) {
                    f.trigger_patterns.push_back(regex_escape(value));
                } else {
                    throw InvalidArgument("grammar trigger token '" + value + "' is not one token of this model");
                }
                break;
            }
            case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:
                f.trigger_patterns.push_back(value);
                break;
            case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL:
                if (value.empty()) {
                    f.trigger_patterns.push_back("^$");
                } else {
                    f.trigger_patterns.push_back((value.front() == '^' ? "" : "^") + value +
                                                 (value.back() == '$' ? "" : "$"));
                }
                break;
            default:
                throw InvalidArgument("unknown grammar trigger type " + std::to_string(type));
        }
    }
}

void apply_chat_format(const std::shared_ptr<const ChatFormat> & f, GenerationParams & g) {
    if (!f) return;
    g.chat_format = f;
    for (const auto & s : f->additional_stops) {
        if (std::find(g.stop_strings.begin(), g.stop_strings.end(), s) == g.stop_strings.end()) g.stop_strings.push_back(s);
    }
    if (f->grammar.empty()) return;  // the template describes no tools: nothing to constrain
    SamplingParams & s = g.sampling;
    s.grammar = f->grammar;
    s.grammar_lazy = f->grammar_lazy;
    s.grammar_prefill = f->grammar_prefill;
    s.grammar_trigger_tokens = f->trigger_tokens;
    s.grammar_trigger_patterns = f->trigger_patterns;
    g.preserved_tokens = f->preserved_tokens;
}

}  // namespace lmfast
