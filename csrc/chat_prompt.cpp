#include "chat_prompt.h"

#include <algorithm>
#include <bitset>
#include <cctype>
#include <stdexcept>
#include <unordered_set>

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

// -- message text that spells control tokens --------------------------------------------------
//
// A template pastes message text into the prompt, and the prompt is tokenized with parse_special
// (the template's own markers must become control tokens), so a message that spells
// "<|im_start|>system" would otherwise get a real role marker. Unless parseSpecialTokensInUserText
// is on, each such spelling in a message is swapped for a placeholder before rendering; the
// rendered prompt is tokenized as usual; then each stretch between two control tokens that holds a
// placeholder is tokenized again, spelling restored and parse_special off (as llama.cpp tokenizes
// every such stretch on its own anyway), so it becomes ordinary text tokens. A chat without such
// spellings takes the usual path, unchanged.
class Defuser {
public:
    // Cheap per render: the set of spellings is built only once a message has a byte that
    // starts one (most messages have none; some vocabularies have thousands of control tokens).
    explicit Defuser(const Model & model) : model_(model) {
        for (const std::string & t : model.control_texts()) first_bytes_.set(static_cast<unsigned char>(t[0]));
    }

    bool any() const { return !used_.empty(); }

    // `s` with every control-token spelling replaced by its placeholder.
    void defuse(std::string & s) {
        std::string out;
        size_t done = 0;
        for (size_t i = 0; i < s.size(); ++i) {
            if (!first_bytes_.test(static_cast<unsigned char>(s[i]))) continue;
            const size_t len = match_at(s, i);
            if (len == 0) continue;
            out.append(s, done, i - done).append(placeholder(s.substr(i, len)));
            done = i + len;
            i = done - 1;
        }
        if (done == 0) return;
        s = out.append(s, done, std::string::npos);
    }

    // Placeholders back to the spellings they stand for.
    std::string restore(const std::string & s) const {
        std::string out = s;
        for (size_t k = 0; k < used_.size(); ++k) {
            const std::string p = placeholder_of(k);
            for (size_t at = out.find(p); at != std::string::npos; at = out.find(p, at + used_[k].size())) {
                out.replace(at, p.size(), used_[k]);
            }
        }
        return out;
    }

    // The tokens of a prompt rendered from defused messages (see above).
    std::vector<llama_token> tokenize(const std::string & rendered) const {
        const std::vector<llama_token> core = model_.tokenize(rendered, /*add_special=*/false, /*parse_special=*/true);
        std::vector<llama_token> fixed;
        size_t cursor = 0, group = 0;
        for (size_t i = 0; i <= core.size(); ++i) {
            size_t at = rendered.size(), len = 0;
            if (i < core.size()) {
                if (!model_.is_control(core[i])) continue;
                const std::string text = llama_vocab_get_text(model_.vocab(), core[i]);
                at = rendered.find(text, cursor);
                if (at == std::string::npos) throw std::runtime_error("control token '" + text + "' not found in the prompt");
                len = text.size();
            }
            append_stretch(rendered.substr(cursor, at - cursor), core, group, i, fixed);
            if (i < core.size()) fixed.push_back(core[i]);
            cursor = at + len;
            group = i + 1;
        }
        return with_added_specials(rendered, core, fixed);
    }

private:
    size_t match_at(const std::string & s, size_t i) {
        if (texts_.empty()) {
            for (const std::string & t : model_.control_texts()) {
                texts_.insert(t);
                if (std::find(lengths_.begin(), lengths_.end(), t.size()) == lengths_.end()) lengths_.push_back(t.size());
            }
            std::sort(lengths_.rbegin(), lengths_.rend());  // the longest spelling first, as llama.cpp matches
        }
        for (size_t len : lengths_) {
            if (i + len <= s.size() && texts_.count(s.substr(i, len))) return len;
        }
        return 0;
    }

    static std::string placeholder_of(size_t k) {
        return "\xEE\x80\x80lmfast-control-" + std::to_string(k) + "\xEE\x80\x81";  // U+E000 ... U+E001
    }

    std::string placeholder(const std::string & text) {
        auto it = std::find(used_.begin(), used_.end(), text);
        if (it == used_.end()) it = used_.insert(used_.end(), text);
        return placeholder_of(static_cast<size_t>(it - used_.begin()));
    }

    // One stretch of text between control tokens: its tokens as rendered, or, when it holds a
    // placeholder, the restored text tokenized without special-token parsing.
    void append_stretch(const std::string & stretch, const std::vector<llama_token> & core, size_t from, size_t to,
                        std::vector<llama_token> & out) const {
        if (stretch.find("\xEE\x80\x80lmfast-control-") == std::string::npos) {
            out.insert(out.end(), core.begin() + from, core.begin() + to);
            return;
        }
        const std::vector<llama_token> plain = model_.tokenize(restore(stretch), false, /*parse_special=*/false);
        out.insert(out.end(), plain.begin(), plain.end());
    }

    // BOS/EOS as tokenizing with add_special adds them around `core`, put around `fixed`.
    std::vector<llama_token> with_added_specials(const std::string & rendered, const std::vector<llama_token> & core,
                                                 const std::vector<llama_token> & fixed) const {
        const std::vector<llama_token> full = model_.tokenize(rendered, /*add_special=*/true, /*parse_special=*/true);
        for (size_t o = 0; o + core.size() <= full.size(); ++o) {
            if (std::equal(core.begin(), core.end(), full.begin() + o)) {
                std::vector<llama_token> out(full.begin(), full.begin() + o);
                out.insert(out.end(), fixed.begin(), fixed.end());
                out.insert(out.end(), full.begin() + o + core.size(), full.end());
                return out;
            }
        }
        throw std::runtime_error("the prompt's added special tokens could not be placed");
    }

    const Model & model_;
    std::unordered_set<std::string> texts_;
    std::bitset<256> first_bytes_;
    std::vector<size_t> lengths_;
    std::vector<std::string> used_;  // spellings met, by placeholder number
};

// Every string in a render_chat_json request's messages, defused (tool definitions are the
// caller's, not message text: left alone).
void defuse_json(common_json & v, Defuser & d) {
    if (v.is_string()) {
        std::string s = v.get<std::string>();
        d.defuse(s);
        v = s;
    } else if (v.is_object()) {
        for (auto entry : v.items()) defuse_json(entry.v, d);
    } else if (v.is_array()) {
        for (auto & item : v) defuse_json(item, d);
    }
}

ChatPrompt defused_prompt(const Model & model, const Defuser & d, const std::string & rendered) {
    ChatPrompt p;
    p.tokens = d.tokenize(rendered);
    p.text = d.restore(rendered);
    return p;
}

}  // namespace

ChatPrompt render_chat_prompt(const Model & model, const std::vector<ChatMessage> & messages,
                              bool parse_special_in_user_text) {
    if (!parse_special_in_user_text) {
        Defuser d(model);
        std::vector<ChatMessage> defused = messages;
        for (ChatMessage & m : defused) d.defuse(m.content);
        if (d.any()) return defused_prompt(model, d, model.apply_chat_template(defused, /*add_generation_prompt=*/true));
    }
    return chat_prompt_from_text(model, model.apply_chat_template(messages, /*add_generation_prompt=*/true));
}

ChatPrompt render_chat_prompt_json(const Model & model, const std::string & request, const PromptTemplate * tmpl,
                                   bool with_tools, bool parse_special_in_user_text) {
    Defuser d(model);
    std::string sent = request;
    if (!parse_special_in_user_text) {
        common_json r = common_json::parse(request);
        if (r.is_object() && r.contains("messages")) defuse_json(r["messages"], d);
        if (d.any()) sent = r.dump();
    }
    const std::string answer = model.apply_chat_template_json(sent, tmpl);
    common_json a;
    try {
        a = common_json::parse(answer);
    } catch (const std::exception & e) {
        throw TemplateError(std::string("the template worker's answer is not JSON: ") + e.what());
    }
    const std::string rendered = a.value("prompt", std::string());
    ChatPrompt p = d.any() ? defused_prompt(model, d, rendered) : chat_prompt_from_text(model, rendered);
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
