// LoRA adapters applied to an engine's context at load (llama.cpp's llama_adapter_lora): each
// adapter GGUF is loaded against the base model, which refuses one whose architecture or tensor
// shapes do not match, and every context the engine makes (at load, and again when grow() makes
// a larger one) gets the same adapters with the same scales. Fixed for the engine's life, so its
// prefix cache never mixes KV computed under different adapter settings.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace lmfast {

class LoraSet {
public:
    LoraSet() = default;
    // (path, scale) pairs; InvalidArgument naming the file when one is not a LoRA adapter of
    // this base model (missing file, another architecture, tensors of another shape).
    LoraSet(llama_model * model, const std::vector<std::pair<std::string, float>> & specs);
    ~LoraSet();
    LoraSet(const LoraSet &) = delete;
    LoraSet & operator=(const LoraSet &) = delete;
    LoraSet(LoraSet && other) noexcept { swap(other); }
    LoraSet & operator=(LoraSet && other) noexcept {
        swap(other);
        return *this;
    }

    // Sets the adapters and scales on a context (no-op without adapters).
    void apply(llama_context * ctx) const;
    bool empty() const { return adapters_.empty(); }

private:
    void swap(LoraSet & other) noexcept {
        adapters_.swap(other.adapters_);
        scales_.swap(other.scales_);
    }
    std::vector<llama_adapter_lora *> adapters_;
    std::vector<float> scales_;
};

}  // namespace lmfast
