#include "model.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sys/stat.h>

#include "chat.h"
#include "errors.h"

namespace lmfast {

namespace {

// The fixed part of a GGUF header: magic, version, tensor count, metadata count.
void check_gguf_header(const std::string & path) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) {
        throw ModelLoadError("model file not found: " + path);
    }
    if (S_ISDIR(st.st_mode)) {
        throw ModelLoadError("model path is a directory, not a GGUF file: " + path);
    }
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        throw ModelLoadError("cannot open model file " + path + ": " + std::strerror(errno));
    }
    const uint64_t file_size = static_cast<uint64_t>(st.st_size);
    unsigned char hdr[24] = {0};
    f.read(reinterpret_cast<char *>(hdr), sizeof hdr);
    if (file_size < sizeof hdr || f.gcount() != static_cast<std::streamsize>(sizeof hdr)) {
        throw ModelLoadError("not a GGUF model file (only " + std::to_string(file_size) +
                             " bytes, shorter than a GGUF header): " + path);
    }
    if (std::memcmp(hdr, "GGUF", 4) != 0) {
        throw ModelLoadError("not a GGUF model file (bad magic at offset 0): " + path);
    }
    uint32_t version;
    uint64_t n_tensors, n_kv;
    std::memcpy(&version, hdr + 4, 4);
    std::memcpy(&n_tensors, hdr + 8, 8);
    std::memcpy(&n_kv, hdr + 16, 8);
    if (version < 2 || version > 3) {
        throw ModelLoadError("unsupported GGUF version " + std::to_string(version) +
                             " at offset 4 (lmfast reads versions 2 and 3): " + path);
    }
    // Every tensor info and every key/value pair takes at least 8+1 bytes in the file.
    if (n_tensors > file_size / 9 || n_kv > file_size / 9) {
        throw ModelLoadError("corrupt GGUF header: " + std::to_string(n_tensors) + " tensors and " +
                             std::to_string(n_kv) + " metadata entries cannot fit in a file of " +
                             std::to_string(file_size) + " bytes: " + path);
    }
}

std::string meta_str(const llama_model * model, const char * key) {
    char buf[512];
    int32_t n = llama_model_meta_val_str(model, key, buf, sizeof buf);
    return n < 0 ? std::string() : std::string(buf, std::min<size_t>(n, sizeof buf - 1));
}

}  // namespace

std::shared_ptr<Model> Model::load(const ModelParams & params) {
    check_gguf_header(params.path);

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
    mp.load_mode = params.use_mmap ? (params.use_mlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_MMAP)
                                   : (params.use_mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE);

    std::shared_ptr<Model> m(new Model());
    m->path_ = params.path;
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
    try {
        m->templates_ = common_chat_templates_init(m->model_, "").release();
    } catch (const std::exception & e) {
        throw ModelLoadError(std::string("the model's chat template could not be parsed: ") + e.what());
    }
    return m;
}

Model::~Model() {
    if (templates_) common_chat_templates_free(templates_);
    if (model_) llama_model_free(model_);
}

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

bool Model::has_chat_template() const {
    return !meta_str(model_, "tokenizer.chat_template").empty();
}

std::string Model::chat_template_source() const {
    return common_chat_templates_source(templates_);
}

std::vector<llama_token> Model::tokenize(const std::string & text, bool add_special, bool parse_special) const {
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

std::string Model::token_to_piece(llama_token token, bool render_special) const {
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof buf, 0, render_special);
    if (n >= 0) return std::string(buf, n);
    std::string big(-n, '\0');
    n = llama_token_to_piece(vocab_, token, big.data(), big.size(), 0, render_special);
    if (n < 0) throw std::runtime_error("token_to_piece failed");
    big.resize(n);
    return big;
}

std::string Model::detokenize(const std::vector<llama_token> & tokens, bool render_special) const {
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

std::string Model::apply_chat_template(const std::vector<ChatMessage> & messages, bool add_generation_prompt) const {
    common_chat_templates_inputs inputs;
    inputs.use_jinja = true;
    inputs.add_generation_prompt = add_generation_prompt;
    for (const auto & m : messages) {
        common_chat_msg msg;
        msg.role = m.role;
        msg.content = m.content;
        inputs.messages.push_back(std::move(msg));
    }
    try {
        return common_chat_templates_apply(templates_, inputs).prompt;
    } catch (const std::exception & e) {
        throw TemplateError(std::string("chat template rendering failed: ") + e.what());
    }
}

}  // namespace lmfast
