// LoRA adapters of an engine (llama.cpp's llama_adapter_lora): each adapter GGUF is loaded against
// the base model, which refuses one whose architecture or tensor shapes do not match. Every context
// the engine makes (at load, and again when grow() makes a larger one) starts with the load-time
// scales; a request may ask for other scales (GenerationParams::lora_scales), which the engine sets
// on the context for the steps that decode it (Engine::build_batch groups requests by setting).
// A setting is one scale per adapter, in load order; 0 leaves an adapter out.
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

    // Sets the adapters with the load-time scales on a context (no-op without adapters).
    void apply(llama_context * ctx) const { apply(ctx, scales_); }
    // Sets the adapters with these scales (one per adapter) on a context.
    void apply(llama_context * ctx, const std::vector<float> & scales) const;
    bool empty() const { return adapters_.empty(); }
    size_t size() const { return adapters_.size(); }
    const std::vector<float> & scales() const { return scales_; }  // the load-time setting
    // The setting `base` with the scales of `overrides` (adapter id, scale) put in; InvalidArgument
    // naming an unknown id or a scale that is not a finite number.
    std::vector<float> with(std::vector<float> base, const std::vector<std::pair<int32_t, float>> & overrides) const;

private:
    void swap(LoraSet & other) noexcept {
        adapters_.swap(other.adapters_);
        scales_.swap(other.scales_);
    }
    std::vector<llama_adapter_lora *> adapters_;
    std::vector<float> scales_;
};

}  // namespace lmfast
