// Parsing and rendering a model's chat template with llama.cpp's common chat code. Shared by the
// template worker (template_worker.cpp) and the fork-per-render fallback (model.cpp); both run it
// in a process of their own, never in the host.
#pragma once

#include <string>
#include <utility>

#include "chat.h"
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

// Renders (role, content) messages; Messages is any range of objects with .role and .content.
template <typename Messages>
std::string render_chat(const common_chat_templates * templates, const Messages & messages, bool add_generation_prompt) {
    common_chat_templates_inputs inputs;
    inputs.use_jinja = true;
    inputs.add_generation_prompt = add_generation_prompt;
    for (const auto & m : messages) {
        common_chat_msg msg;
        msg.role = m.role;
        msg.content = m.content;
        inputs.messages.push_back(std::move(msg));
    }
    return common_chat_templates_apply(templates, inputs).prompt;
}

}  // namespace lmfast
