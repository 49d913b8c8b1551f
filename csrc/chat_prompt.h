// A rendered chat as the engine takes it: the prompt's tokens and, when tools were offered, the
// template's tool-call format resolved against the model's vocabulary. Rendering (in the template
// worker), tokenizing and resolving all happen here, once per render, so nothing of a chat's
// prompt goes back and forth through Python: Engine.submit takes the object, the request holds
// the call markers back from its streamed text (detokenizer.h's CallFilter) and parses its own
// output at the end (tool_calls.h).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace lmfast {

class Model;
struct GenerationParams;
struct PromptTemplate;
struct ChatMessage;

// What chat_render.h's render_chat_json says beside the prompt, and what it means in tokens.
struct ChatFormat {
    // As rendered.
    int format = 0;                  // llama.cpp's common_chat_format
    std::string parser;              // llama.cpp's serialized output parser ("" for older formats)
    std::string generation_prompt;   // the text the template ends the prompt with
    std::string grammar;             // GBNF of a call; "" when the template describes no tools
    bool grammar_lazy = false;       // free text until a trigger, then the grammar
    std::vector<std::pair<int, std::string>> triggers;  // (common_grammar_trigger_type, value)
    std::vector<std::string> preserved;                 // control-token texts the output must show
    std::vector<std::string> additional_stops;
    // Resolved once against the vocabulary (resolve_chat_format).
    std::vector<llama_token> preserved_tokens;
    std::vector<llama_token> grammar_prefill;          // a grammar that is not lazy starts here
    std::vector<llama_token> trigger_tokens;           // triggers that are one preserved token
    std::vector<std::string> trigger_patterns;         // the rest, as regular expressions
    std::vector<std::string> call_markers;             // literal trigger texts: a call starts there
};

struct ChatPrompt {
    std::string text;
    std::vector<llama_token> tokens;
    std::shared_ptr<const ChatFormat> format;  // null: no tools offered
};

// A plain chat of (role, content) messages. Unless `parse_special_in_user_text`, text in the
// messages that spells a control token ("<|im_start|>") is tokenized as ordinary text, never as
// the control token (chat_prompt.cpp); the template's own markers are control tokens either way.
ChatPrompt render_chat_prompt(const Model & model, const std::vector<ChatMessage> & messages,
                              bool parse_special_in_user_text = false);
// A chat given as render_chat_json's JSON request (tool calls, tool results, tools). The format
// is kept when `with_tools`. `tmpl`: a Jinja template used instead of the model's. Message text
// is kept plain as above.
ChatPrompt render_chat_prompt_json(const Model & model, const std::string & request, const PromptTemplate * tmpl,
                                   bool with_tools, bool parse_special_in_user_text = false);
// Text rendered elsewhere (a manual prompt template), tokenized as a chat prompt is.
ChatPrompt chat_prompt_from_text(const Model & model, std::string text);

// Fills the token fields of `f` from its rendered ones: a trigger word that is one preserved
// control token becomes a token trigger, as in llama.cpp's server; other words become escaped
// patterns. Throws InvalidArgument for a trigger type it does not know.
void resolve_chat_format(const Model & model, ChatFormat & f);
// The sampling and output fields a request with this format needs (grammar, triggers, preserved
// tokens, additional stop strings, and the format itself: its parser and call markers).
void apply_chat_format(const std::shared_ptr<const ChatFormat> & f, GenerationParams & g);

}  // namespace lmfast
