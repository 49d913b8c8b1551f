// Images in chats through llama.cpp's libmtmd: a vision projector ("mmproj") loaded beside a text
// model, and a rendered chat with images turned into the chunks the engine evaluates (text tokens
// and image embeddings).
//
// The engine keeps a prompt as a token list (prefix cache, host and disk tiers). An image takes
// its positions in that list as placeholder tokens derived from a hash of the image's pixels, so
// that a later turn about the same image finds it in the cache like text, and two different
// images never match. Placeholders are never evaluated as text: Engine::eval_vision_prefix
// evaluates the image chunks themselves (engine_vision.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llama.h"

struct mtmd_context;
struct mtmd_input_chunks;
struct mtmd_input_chunk;
struct mtmd_bitmap;

namespace lmfast {

class Model;

// Checks a projector file before libmtmd reads it (clip.cpp asserts, aborting the process, on a
// metadata value of an unexpected type): the GGUF structure (gguf_check.h), then the clip keys'
// types and ranges. Throws ModelLoadError naming the file and the problem.
void validate_projector_file(const std::string & path);
// The same checks; true when the file holds an audio encoder of a type lmfast takes audio through.
bool check_projector(const std::string & path);

class Vision {
public:
    // Validates and loads `path` for `model`; a projector whose output width differs from the
    // model's embedding width is a ModelLoadError.
    // flash_attn: -1 auto, 0 off, 1 on, for the projector's own attention (the text model's
    // setting, as llama-mtmd-cli passes its -fa to both: the two round differently).
    Vision(std::shared_ptr<Model> model, const std::string & path, int32_t n_threads, int32_t flash_attn = -1);
    ~Vision();
    Vision(const Vision &) = delete;
    Vision & operator=(const Vision &) = delete;

    const std::string & path() const { return path_; }
    const std::shared_ptr<Model> & model() const { return model_; }
    // The text that marks where an image goes in a rendered chat ("<__media__>").
    static const char * marker();

    mtmd_context * ctx() const { return ctx_; }
    bool images() const { return images_; }  // the projector reads images
    bool audio() const { return audio_; }    // ... and audio clips (WAV, MP3, FLAC: libmtmd's miniaudio)
    std::mutex & mu() const { return mu_; }  // libmtmd's context is not thread-safe

private:
    void check_markers(mtmd_bitmap * test_media) const;  // takes the bitmap
    std::shared_ptr<Model> model_;
    std::string path_;
    mtmd_context * ctx_ = nullptr;
    bool images_ = false, audio_ = false;
    mutable std::mutex mu_;
};

// A rendered chat with images, tokenized by libmtmd.
struct VisionPrompt {
    struct Span {
        size_t begin = 0, n = 0;  // positions in `tokens`
        bool image = false;
        const mtmd_input_chunk * chunk = nullptr;
    };
    std::shared_ptr<Vision> vision;
    std::shared_ptr<mtmd_input_chunks> chunks;
    std::vector<llama_token> tokens;  // text tokens, and placeholders for images
    std::vector<llama_token> text_tokens;  // the text tokens alone (repetition penalties see these)
    std::vector<Span> spans;          // one per chunk, in order; the last one is text
    int32_t n_image_tokens = 0;

    // `text` holds one marker per image, in order; `images` are encoded files (PNG, JPEG, ...).
    // Throws InvalidArgument for an image libmtmd cannot decode or a marker/image count mismatch.
    static std::shared_ptr<const VisionPrompt> make(std::shared_ptr<Vision> vision, const std::string & text,
                                                    const std::vector<std::string> & images);
};

}  // namespace lmfast
