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

void LoraSet::apply(llama_context * ctx, const std::vector<float> & scales_in) const {
    if (adapters_.empty()) return;
    if (scales_in.size() != adapters_.size()) throw std::logic_error("LoRA setting of the wrong length");
    std::vector<float> scales = scales_in;  // llama.cpp takes a non-const pointer
    if (llama_set_adapters_lora(ctx, const_cast<llama_adapter_lora **>(adapters_.data()), adapters_.size(),
                                scales.data()) != 0) {
        throw std::runtime_error("llama.cpp could not set the LoRA adapters on a context");
    }
}

std::vector<float> LoraSet::with(std::vector<float> base,
                                 const std::vector<std::pair<int32_t, float>> & overrides) const {
    for (const auto & [id, scale] : overrides) {
        if (adapters_.empty()) {
            throw InvalidArgument("LoRA adapter id " + std::to_string(id) +
                                  ": this model has no LoRA adapters (the load config key loras attaches them)");
        }
        if (id < 0 || static_cast<size_t>(id) >= adapters_.size()) {
            throw InvalidArgument("LoRA adapter id " + std::to_string(id) + ": this model has " +
                                  std::to_string(adapters_.size()) + " adapter(s) (ids 0.." +
                                  std::to_string(static_cast<int64_t>(adapters_.size()) - 1) +
                                  "; lora_adapters() lists them)");
        }
        if (!std::isfinite(scale)) {
            throw InvalidArgument("LoRA adapter id " + std::to_string(id) + ": scale must be a finite number");
        }
        base[static_cast<size_t>(id)] = scale;
    }
    return base;
}

}  // namespace lmfast
