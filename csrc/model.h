// A loaded GGUF model: weights (mmap'ed), metadata, vocabulary, chat template.
// Immutable after load and safe to share between engines and threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

struct common_chat_templates;

namespace lmfast {

class TemplateHost;

struct ModelParams {
    std::string path;
    int32_t n_gpu_layers = 0;   // -1: all
    int32_t main_gpu = 0;       // index into `devices` (or into all GPUs when devices is empty)
    int32_t split_mode = 1;     // llama_split_mode: 0 none (main GPU only), 1 layer, 2 row
    std::vector<int> devices;   // ggml device indices to offload to; empty: every GPU
    bool use_mmap = true;
    bool use_mlock = false;
    // Integer metadata values that replace the file's at load (llama.cpp's kv_overrides), e.g.
    // "<arch>.expert_used_count" for the numExperts load key. A key must name a scalar the file
    // has: llama.cpp applies no override to an absent key.
    std::vector<std::pair<std::string, int64_t>> int_overrides;
    std::function<void(float)> progress;  // load progress 0..1 from llama.cpp's loader; may be empty
};

struct ChatMessage {
    std::string role;
    std::string content;
};

// A Jinja chat template given in place of the model's (the promptTemplate prediction key); as
// untrusted as the model's own, so it is parsed and run in the template worker too.
struct PromptTemplate {
    std::string source;
    std::string bos_token;  // what the template sees as bos_token; "": the model's
    std::string eos_token;  // likewise eos_token
};

class Model {
public:
    // Checks the file (exists, readable, GGUF magic, plausible header) before
    // llama.cpp sees it; throws ModelLoadError with a message that says what is wrong.
    static std::shared_ptr<Model> load(const ModelParams & params);
    ~Model();
    Model(const Model &) = delete;
    Model & operator=(const Model &) = delete;

    llama_model * get() const { return model_; }
    const llama_vocab * vocab() const { return vocab_; }
    const std::string & path() const { return path_; }

    std::map<std::string, std::string> metadata() const;
    int32_t n_ctx_train() const;
    int32_t n_vocab() const;
    uint64_t n_params() const;
    uint64_t size() const;
    std::string description() const;
    std::string chat_template_source() const;

    // add_special: add BOS/EOS as the vocabulary asks; parse_special: turn
    // "<|im_start|>"-style text into control tokens.
    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string detokenize(const std::vector<llama_token> & tokens, bool render_special) const;
    std::string token_to_piece(llama_token token, bool render_special) const;
    void check_tokens(const std::vector<llama_token> & tokens) const;
    // The texts that parse_special turns into control tokens ("<|im_start|>"), computed at load:
    // chat_prompt.cpp keeps them plain where a message spells them.
    const std::vector<std::string> & control_texts() const { return control_texts_; }
    bool is_control(llama_token token) const { return llama_vocab_get_attr(vocab_, token) & LLAMA_TOKEN_ATTR_CONTROL; }
    bool is_eog(llama_token token) const { return llama_vocab_is_eog(vocab_, token); }

    // Renders messages with the model's own (Jinja) chat template.
    std::string apply_chat_template(const std::vector<ChatMessage> & messages, bool add_generation_prompt) const;
    // Renders a chat with tool definitions and tool calls: chat_render.h's render_chat_json, in
    // the template worker too; returns its JSON answer (prompt, tool-call grammar, output parser).
    // With `tmpl`, that template renders instead of the model's.
    std::string apply_chat_template_json(const std::string & request, const PromptTemplate * tmpl = nullptr) const;
    // The process id of the template worker (template_host.h), -1 while none runs (after a
    // failure, until the next render starts one); for tests.
    int template_worker_pid() const;

private:
    Model() = default;
    std::vector<llama_token> tokenize_raw(const std::string & text, bool add_special, bool parse_special) const;
    std::string detokenize_raw(const std::vector<llama_token> & tokens, bool render_special) const;
    std::string token_to_piece_raw(llama_token token, bool render_special) const;
    template <typename Request> std::string render_template(Request && request) const;
    llama_model * model_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    std::string path_;
    std::vector<std::string> control_texts_;
    std::string template_source_;  // the template as llama.cpp resolved it (rendered in a sandbox)
    std::unique_ptr<TemplateHost> templates_;  // the template worker: every parse and render
};

}  // namespace lmfast
