#include "lora.h"

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "errors.h"

namespace lmfast {

LoraSet::LoraSet(llama_model * model, const std::vector<std::pair<std::string, float>> & specs) {
    try {
        for (const auto & [path, scale] : specs) {
            if (!std::isfinite(scale)) throw InvalidArgument("LoRA adapter " + path + ": scale must be a finite number");
            std::error_code ec;
            if (!std::filesystem::is_regular_file(path, ec)) throw InvalidArgument("LoRA adapter " + path + ": no such file");
            // llama.cpp checks general.type, adapter.type, the architecture and every tensor's
            // shape against the base model, and returns null (after logging why) on a mismatch.
            llama_adapter_lora * a = llama_adapter_lora_init(model, path.c_str());
            if (!a) {
                throw InvalidArgument("LoRA adapter " + path + " cannot be applied to this model: not a LoRA adapter "
                                      "GGUF, or made for another base model (architecture or tensor shapes differ; "
                                      "lms.set_log_level('error') shows llama.cpp's reason)");
            }
            adapters_.push_back(a);
            scales_.push_back(scale);
        }
    } catch (...) {
        for (auto * a : adapters_) llama_adapter_lora_free(a);
        throw;
    }
}

LoraSet::~LoraSet() {
    // The contexts that used them are freed first (the engine frees its context in its destructor body).
    for (auto * a : adapters_) llama_adapter_lora_free(a);
}

void LoraSet::apply(llama_context * ctx) const {
    if (adapters_.empty()) return;
    std::vector<float> scales = scales_;
    if (llama_set_adapters_lora(ctx, const_cast<llama_adapter_lora **>(adapters_.data()), adapters_.size(),
                                scales.data()) != 0) {
        throw std::runtime_error("llama.cpp could not set the LoRA adapters on a context");
    }
}

}  // namespace lmfast
