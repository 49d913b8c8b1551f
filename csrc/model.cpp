#include "model.h"

#include <algorithm>
#include <cstring>

#include "errors.h"
#include "gguf_check.h"
#include "sandbox.h"
#include "template_host.h"

namespace lmfast {

// llama.cpp's override list: fixed-size keys, ended by an entry with an empty key.
static std::vector<llama_model_kv_override> kv_overrides(const std::vector<std::pair<std::string, int64_t>> & ints) {
    std::vector<llama_model_kv_override> out;
    for (const auto & [key, value] : ints) {
        llama_model_kv_override o {};
        if (key.empty() || key.size() >= sizeof o.key) {
            throw InvalidArgument("metadata override key '" + key + "' is empty or too long (127 bytes at most)");
        }
        o.tag = LLAMA_KV_OVERRIDE_TYPE_INT;
        std::memcpy(o.key, key.data(), key.size());
        o.val_i64 = value;
        out.push_back(o);
    }
    out.push_back(llama_model_kv_override {});
    return out;
}

std::shared_ptr<Model> Model::load(const ModelParams & params) {
    // The whole header is validated first: llama.cpp aborts on some malformed files.
    validate_gguf_file(params.path);

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = params.n_gpu_layers;
    mp.main_gpu = params.main_gpu;
    mp.split_mode = static_cast<llama_split_mode>(params.split_mode);
    std::vector<ggml_backend_dev_t> devices;  // null-terminated, as llama.cpp wants it
    if (!params.devices.empty()) {
        for (int i : params.devices) {
            if (i < 0 || static_cast<size_t>(i) >= ggml_backend_dev_count()) {
                throw InvalidArgument("no ggml device with index " + std::to_string(i));
            }
            devices.push_back(ggml_backend_dev_get(i));
        }
        devices.push_back(nullptr);
        mp.devices = devices.data();
    }
    const std::vector<llama_model_kv_override> overrides = kv_overrides(params.int_overrides);
    if (!params.int_overrides.empty()) mp.kv_overrides = overrides.data();
    if (params.progress) {
        // llama.cpp reports the share of tensor data read; returning false would cancel the load.
        mp.progress_callback = [](float progress, void * user) {
            (*static_cast<const std::function<void(float)> *>(user))(progress);
            return true;
        };
        mp.progress_callback_user_data = const_cast<std::function<void(float)> *>(&params.progress);
    }
    mp.load_mode = params.use_mmap ? (params.use_mlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_MMAP)
                                   : (params.use_mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE);

    std::shared_ptr<Model> m(new Model());
    m->path_ = params.path;
    // The template worker reads the vocabulary while the weights load here (see below).
    const SandboxLimits limits = template_limits();
    const std::string worker = TemplateHost::worker_path();
    if (worker.empty()) {
        throw ModelLoadError("the template worker " + TemplateHost::expected_worker_path() +
                             " is missing or not executable, so the model's chat template cannot be run safely: "
                             "reinstall lmfast (or set LMFAST_TEMPLATE_WORKER to the worker's path)");
    }
    m->templates_ = std::make_unique<TemplateHost>(worker, params.path, limits);
    m->templates_->launch();  // a failure here is reported by start() below
    m->model_ = llama_model_load_from_file(params.path.c_str(), mp);
    if (!m->model_) {
        throw ModelLoadError("llama.cpp could not load " + params.path +
                             " (corrupt or truncated file, or an unsupported architecture; "
                             "set LMFAST_LOG=info for llama.cpp's own messages)");
    }
    m->vocab_ = llama_model_get_vocab(m->model_);
    if (llama_vocab_n_tokens(m->vocab_) <= 0) {
        throw ModelLoadError("model has an empty vocabulary: " + params.path);
    }
    // tokenizer.ggml.model "none" / "no_vocab": llama.cpp loads such a model, then asserts
    // (aborts) at the first tokenization. Found by the fuzz test.
    if (llama_vocab_type(m->vocab_) == LLAMA_VOCAB_TYPE_NONE) {
        throw ModelLoadError("the model has no tokenizer (tokenizer.ggml.model is 'none' or 'no_vocab'), so its "
                             "vocabulary cannot turn text into tokens: " + params.path);
    }
    // A vocabulary that is structurally valid can still be inconsistent (e.g. an SPM tokenizer
    // without its byte tokens): llama.cpp's tokenizers then throw from inside (std::out_of_range).
    // Try them once now, so such a file fails at load with a clear message.
    {
        static const char * probe = "Hello, world!\n\t 42 \xc3\x84\xc3\xb6 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \x01";
        try {
            const std::vector<llama_token> toks = m->tokenize(probe, true, true);
            m->detokenize(toks, true);
            for (llama_token t : toks) m->token_to_piece(t, true);
        } catch (const ModelLoadError &) {
            throw;
        } catch (const std::exception & e) {
            throw ModelLoadError("the model's vocabulary is unusable (corrupt tokenizer data in " + params.path +
                                 "): " + e.what());
        }
    }
    // What parse_special matches besides user-defined tokens (llama-vocab.cpp's special-token
    // cache: control and unknown tokens), for chat_prompt.cpp.
    for (llama_token t = 0; t < llama_vocab_n_tokens(m->vocab_); ++t) {
        if (!(llama_vocab_get_attr(m->vocab_, t) & (LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_UNKNOWN))) continue;
        const char * text = llama_vocab_get_text(m->vocab_, t);
        if (text && *text) m->control_texts_.emplace_back(text);
    }
    // The chat template comes from the file, so it is untrusted: parsing it (which also runs it on
    // sample conversations, to find its capabilities) and every render happen in the template
    // worker (template_host.h), launched before the weights were loaded and kept for the model's
    // life. The parent never runs template code itself.
    const SandboxResult probe = m->templates_->start();
    if (probe.status != SandboxResult::Ok) {
        throw ModelLoadError("the model's chat template is unusable (parsed and tried on sample chats in the template "
                             "worker): " + describe(probe, limits));
    }
    m->template_source_ = probe.output;
    return m;
}

Model::~Model() {
    templates_.reset();
    if (model_) llama_model_free(model_);
}

int Model::template_worker_pid() const { return templates_ ? templates_->pid() : -1; }

std::map<std::string, std::string> Model::metadata() const {
    std::map<std::string, std::string> out;
    const int32_t n = llama_model_meta_count(model_);
    std::vector<char> key(512), val(4096);
    for (int32_t i = 0; i < n; ++i) {
        int32_t nk = llama_model_meta_key_by_index(model_, i, key.data(), key.size());
        if (nk < 0) continue;
        int32_t nv = llama_model_meta_val_str_by_index(model_, i, val.data(), val.size());
        if (nv < 0) continue;
        if (static_cast<size_t>(nv) >= val.size()) {
            val.resize(nv + 1);
            nv = llama_model_meta_val_str_by_index(model_, i, val.data(), val.size());
        }
        out.emplace(std::string(key.data(), std::min<size_t>(nk, key.size() - 1)),
                    std::string(val.data(), std::min<size_t>(nv, val.size() - 1)));
    }
    return out;
}

int32_t Model::n_ctx_train() const { return llama_model_n_ctx_train(model_); }
int32_t Model::n_vocab() const { return llama_vocab_n_tokens(vocab_); }
uint64_t Model::n_params() const { return llama_model_n_params(model_); }
uint64_t Model::size() const { return llama_model_size(model_); }

std::string Model::description() const {
    char buf[256];
    int32_t n = llama_model_desc(model_, buf, sizeof buf);
    return n < 0 ? std::string() : std::string(buf);
}

std::string Model::chat_template_source() const {
    return template_source_;
}

std::vector<llama_token> Model::tokenize_raw(const std::string & text, bool add_special, bool parse_special) const {
    if (text.size() > static_cast<size_t>(INT32_MAX / 2)) {
        throw InvalidArgument("text too long to tokenize (" + std::to_string(text.size()) + " bytes)");
    }
    const int32_t len = static_cast<int32_t>(text.size());
    std::vector<llama_token> out(len + 2);
    int32_t n = llama_tokenize(vocab_, text.data(), len, out.data(), out.size(), add_special, parse_special);
    if (n < 0) {
        out.resize(-n);
        n = llama_tokenize(vocab_, text.data(), len, out.data(), out.size(), add_special, parse_special);
        if (n < 0) throw std::runtime_error("tokenization failed");
    }
    out.resize(n);
    // A template that writes the BOS text itself, tokenized with add_special, gives two BOS.
    const llama_token bos = llama_vocab_bos(vocab_);
    if (add_special && out.size() >= 2 && bos != LLAMA_TOKEN_NULL && out[0] == bos && out[1] == bos) {
        out.erase(out.begin());
    }
    return out;
}

void Model::check_tokens(const std::vector<llama_token> & tokens) const {
    const int32_t n = n_vocab();
    for (llama_token t : tokens) {
        if (t < 0 || t >= n) {
            throw InvalidArgument("token id " + std::to_string(t) + " is out of range for this model's vocabulary (0.." +
                                  std::to_string(n - 1) + ")");
        }
    }
}

std::string Model::token_to_piece_raw(llama_token token, bool render_special) const {
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof buf, 0, render_special);
    if (n >= 0) return std::string(buf, n);
    std::string big(-n, '\0');
    n = llama_token_to_piece(vocab_, token, big.data(), big.size(), 0, render_special);
    if (n < 0) throw std::runtime_error("token_to_piece failed");
    big.resize(n);
    return big;
}

std::string Model::detokenize_raw(const std::vector<llama_token> & tokens, bool render_special) const {
    check_tokens(tokens);
    if (tokens.empty()) return std::string();
    std::string out(tokens.size() * 8 + 16, '\0');
    int32_t n = llama_detokenize(vocab_, tokens.data(), tokens.size(), out.data(), out.size(), false, render_special);
    if (n < 0) {
        out.resize(-n);
        n = llama_detokenize(vocab_, tokens.data(), tokens.size(), out.data(), out.size(), false, render_special);
        if (n < 0) throw std::runtime_error("detokenization failed");
    }
    out.resize(n);
    return out;
}

// llama.cpp's tokenizers throw standard exceptions on an inconsistent vocabulary (a corrupt
// model file); those become ModelLoadError, lmfast's own exceptions pass through.
template <typename F> static auto vocab_guard(const Model & m, F && f) -> decltype(f()) {
    try {
        return f();
    } catch (const InvalidArgument &) {
        throw;
    } catch (const ModelLoadError &) {
        throw;
    } catch (const std::exception & e) {
        throw ModelLoadError("the model's vocabulary is unusable (corrupt tokenizer data in " + m.path() +
                             "): " + e.what());
    }
}

std::vector<llama_token> Model::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    return vocab_guard(*this, [&] { return tokenize_raw(text, add_special, parse_special); });
}

std::string Model::token_to_piece(llama_token token, bool render_special) const {
    return vocab_guard(*this, [&] { return token_to_piece_raw(token, render_special); });
}

std::string Model::detokenize(const std::vector<llama_token> & tokens, bool render_special) const {
    return vocab_guard(*this, [&] { return detokenize_raw(tokens, render_special); });
}

template <typename Request>
std::string Model::render_template(Request && request) const {
    const SandboxResult r = request(*templates_);
    if (r.status != SandboxResult::Ok) {
        throw TemplateError("chat template rendering failed: " + describe(r, templates_->limits()));
    }
    return r.output;
}

std::string Model::apply_chat_template(const std::vector<ChatMessage> & messages, bool add_generation_prompt) const {
    return render_template([&](TemplateHost & host) { return host.render(messages, add_generation_prompt); });
}

std::string Model::apply_chat_template_json(const std::string & request, const PromptTemplate * tmpl) const {
    return render_template([&](TemplateHost & host) { return host.render_json(request, tmpl); });
}

}  // namespace lmfast
