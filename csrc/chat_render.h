// Parsing and rendering a model's chat template with llama.cpp's common chat code. Only the
// template worker (template_worker.cpp) includes it: templates run in that process of their own,
// never in the host.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "chat.h"
#include "chat-auto-parser.h"
#include "common.h"
#include "llama.h"

namespace lmfast {

// Parses the model's template and tries it on sample chats (llama.cpp's capability probe).
inline common_chat_templates_ptr init_chat_templates(const llama_model * model) {
    try {
        return common_chat_templates_init(model, "");
    } catch (const std::exception &) {
        // common_chat_templates_init rethrows a copy sliced to std::exception (its message only
        // goes to the log): parse the template once more for the parser's own message.
        char buf[1];
        const int32_t n = llama_model_meta_val_str(model, "tokenizer.chat_template", buf, 0);
        if (n > 0) {
            std::string src(static_cast<size_t>(n) + 1, '\0');
            llama_model_meta_val_str(model, "tokenizer.chat_template", src.data(), src.size());
            src.resize(static_cast<size_t>(n));
            common_chat_template check(src, "", "");
        }
        throw;
    }
}

// The model's BOS or EOS token as text ("" when the vocabulary has none).
inline std::string special_token_text(const llama_model * model, llama_token token) {
    return token == LLAMA_TOKEN_NULL ? std::string() : common_token_to_piece(llama_model_get_vocab(model), token, true);
}

// Parses a template given in place of the model's (the promptTemplate prediction key) and tries
// it on sample chats, as init_chat_templates does. bos/eos: the text the template sees as
// bos_token/eos_token; "" keeps the model's.
inline common_chat_templates_ptr init_override_templates(const llama_model * model, const std::string & source,
                                                         const std::string & bos, const std::string & eos) {
    if (source.empty()) throw std::invalid_argument("the prompt template is empty");
    try {
        if (bos.empty() && eos.empty()) return common_chat_templates_init(model, source);
        // common_chat_templates_init reads BOS/EOS from the model when it has one, ignoring the
        // overrides: give it none, and the model's text for whichever was not overridden.
        const llama_vocab * vocab = llama_model_get_vocab(model);
        return common_chat_templates_init(nullptr, source, bos.empty() ? special_token_text(model, llama_vocab_bos(vocab)) : bos,
                                          eos.empty() ? special_token_text(model, llama_vocab_eos(vocab)) : eos);
    } catch (const std::exception &) {
        common_chat_template check(source, bos, eos);  // for the parser's own message (see above)
        throw;
    }
}

// Whether no model-specific handler of llama.cpp claims the template (common_chat_try_specialized_template
// decides on the source text alone). For such a template common_chat_templates_apply builds a
// prompt by applying the template to its parameters, with or without force_pure_content; without
// it, each call also runs the differential autoparser (probe chats rendered and diffed) and builds
// a tool-call parser, which a plain prompt does not use. A handler that claims the template, or
// fails on the probe chat, keeps the full path.
inline bool renders_generically(const common_chat_templates * templates) {
    try {
        const std::string src = common_chat_templates_source(templates);
        const common_chat_template tmpl(src, "", "");
        autoparser::generation_params probe;
        probe.messages = common_json::array({{{"role", "user"}, {"content", "Hello"}}});
        probe.add_generation_prompt = true;
        probe.extra_context = common_json::object();
        return !common_chat_try_specialized_template(tmpl, src, probe).has_value();
    } catch (const std::exception &) {
        return false;
    }
}

// Renders (role, content) messages; Messages is any range of objects with .role and .content.
// generic: renders_generically(templates), which skips the per-call format analysis.
template <typename Messages>
std::string render_chat(const common_chat_templates * templates, const Messages & messages, bool add_generation_prompt,
                        bool generic = false) {
    common_chat_templates_inputs inputs;
    inputs.use_jinja = true;
    inputs.add_generation_prompt = add_generation_prompt;
    inputs.force_pure_content = generic;
    for (const auto & m : messages) {
        common_chat_msg msg;
        msg.role = m.role;
        msg.content = m.content;
        inputs.messages.push_back(std::move(msg));
    }
    return common_chat_templates_apply(templates, inputs).prompt;
}

// Renders a chat given as JSON, with tool definitions, and returns what sampling and parsing
// need beside the prompt, also as JSON. Request:
//   {"messages": [OpenAI-style messages, tool_calls and tool results included],
//    "tools": [OpenAI-style function tools] (optional), "tool_choice": "auto"|"required"|"none",
//    "parallel_tool_calls": bool, "add_generation_prompt": bool}
// Answer:
//   {"prompt", "grammar", "grammar_lazy", "grammar_triggers": [{"type", "value"}],
//    "preserved_tokens": [...], "additional_stops": [...], "parser", "generation_prompt", "format"}
// "grammar" constrains a tool call's JSON once a trigger is generated (lazy) or from the first
// token (tool_choice "required"); "parser" is llama.cpp's serialized PEG parser of this
// template's output format, which tool_calls.h applies to the generated text.
inline std::string render_chat_json(const common_chat_templates * templates, const std::string & request) {
    const common_json req = common_json::parse(request);
    common_chat_templates_inputs inputs;
    inputs.use_jinja = true;
    inputs.add_generation_prompt = req.value("add_generation_prompt", true);
    inputs.messages = common_chat_msgs_parse_oaicompat(req.at("messages"));
    if (req.contains("tools") && !req.at("tools").is_null()) {
        inputs.tools = common_chat_tools_parse_oaicompat(req.at("tools"));
        inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(req.value("tool_choice", std::string("auto")));
        inputs.parallel_tool_calls = req.value("parallel_tool_calls", false);
    }
    const common_chat_params p = common_chat_templates_apply(templates, inputs);
    common_json out = common_json::object();
    out["prompt"] = p.prompt;
    out["grammar"] = p.grammar;
    out["grammar_lazy"] = p.grammar_lazy;
    common_json triggers = common_json::array();
    for (const auto & t : p.grammar_triggers) {
        common_json tj = common_json::object();
        tj["type"] = static_cast<int>(t.type);
        tj["value"] = t.value;
        triggers.push_back(tj);
    }
    out["grammar_triggers"] = triggers;
    out["preserved_tokens"] = p.preserved_tokens;
    out["additional_stops"] = p.additional_stops;
    out["parser"] = p.parser;
    out["generation_prompt"] = p.generation_prompt;
    out["format"] = static_cast<int>(p.format);
    return out.dump_safe();
}

}  // namespace lmfast
