// Vision projectors and image prompts through libmtmd (vision.h).
#include "vision.h"

#include <climits>
#include <cmath>
#include <csignal>
#if defined(__linux__)
#include <sys/wait.h>
#include <unistd.h>
#endif
#include <cstring>
#include <set>

#include "errors.h"
#include "gguf_check.h"
#include "model.h"
#include "mtmd-helper.h"
#include "mtmd.h"

namespace lmfast {

namespace {

bool starts_with(const std::string & s, const char * p) { return s.rfind(p, 0) == 0; }

// The type clip.cpp reads each scalar clip key with: it asserts (aborts) on any other
// (gguf_get_val_u32 and friends). Arrays it checks itself.
enum class Want { U32, I32, F32, Bool, Str };

Want wanted_type(const std::string & key) {
    static const std::set<std::string> bools = {"clip.has_vision_encoder", "clip.has_audio_encoder",
                                                "clip.has_gen_audio_encoder", "clip.use_gelu", "clip.use_silu"};
    if (bools.count(key)) return Want::Bool;
    if (key.find("projector_type") != std::string::npos || key == "clip.vision.mm_patch_merge_type" ||
        key == "clip.gen.audio.model_variant") {
        return Want::Str;
    }
    if (key.find("epsilon") != std::string::npos || key == "clip.vision.swiglu_clamp") return Want::F32;
    if (key == "clip.minicpmv_version") return Want::I32;
    return Want::U32;
}

// The clip keys clip.cpp reads as arrays (get_arr_int / get_arr_f32).
bool is_array_key(const std::string & key) {
    static const std::set<std::string> arrays = {
        "clip.vision.image_grid_pinpoints", "clip.vision.image_mean", "clip.vision.image_std",
        "clip.vision.feature_layer", "clip.audio.feature_layer", "clip.gen.audio.feature_layer",
        "clip.vision.wa_layer_indexes", "clip.vision.wa_pattern_mode", "clip.audio.wa_pattern_mode",
        "clip.audio.rvq.codebook_size", "clip.vision.projector.spatial_offsets"};
    return arrays.count(key) > 0;
}

bool type_matches(const GgufKv & kv, Want w) {
    constexpr uint32_t kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kStr = 8;
    switch (w) {
        case Want::U32: return kv.type == kU32;
        case Want::I32: return kv.type == kI32;
        case Want::F32: return kv.type == kF32;
        case Want::Bool: return kv.type == kBool;
        case Want::Str: return kv.type == kStr;
    }
    return false;
}

// Sizes clip.cpp divides by or allocates with: zero divides, huge ones overflow 32-bit shapes.
void check_size(const std::string & path, const GgufKv & kv) {
    static const std::set<std::string> positive = {
        "clip.vision.image_size", "clip.vision.patch_size", "clip.vision.embedding_length",
        "clip.vision.attention.head_count", "clip.vision.block_count", "clip.vision.projection_dim",
        "clip.audio.embedding_length", "clip.audio.attention.head_count", "clip.audio.block_count",
        "clip.audio.projection_dim", "clip.audio.projector.stack_factor"};
    if (positive.count(kv.key) && (kv.u == 0 || kv.u > 65536)) {
        throw ModelLoadError("vision projector " + path + ": '" + kv.key + "' is " + std::to_string(kv.u) +
                             " (must be 1..65536)");
    }
    // clip.cpp throws for mel bins outside 1..256 itself; lmfast says so before it reads the file.
    if (kv.key == "clip.audio.num_mel_bins" && (kv.u == 0 || kv.u > 256)) {
        throw ModelLoadError("audio projector " + path + ": 'clip.audio.num_mel_bins' is " + std::to_string(kv.u) +
                             " (must be 1..256)");
    }
}

// The audio projector types lmfast has compared with llama-mtmd-cli (tests/test_audio.py): the
// others (Qwen2-Audio, Voxtral, LFM2-Audio, ...) would load through the same path but are untested.
bool audio_type_tested(const std::string & type) { return type == "ultravox"; }

}  // namespace

void validate_projector_file(const std::string & path) { (void) check_projector(path); }

bool check_projector(const std::string & path) {
    std::vector<GgufKv> meta;
    validate_gguf_file(path, &meta);
    bool has_vision = false, has_audio = false;
    uint64_t n_embd = 0, n_head = 0, image_size = 0, patch = 0, a_embd = 0, a_head = 0;
    std::string type, audio_type;
    for (const GgufKv & kv : meta) {
        if ((kv.key == "general.name" || kv.key == "general.description") && kv.type != 8) {
            throw ModelLoadError("vision projector " + path + ": metadata '" + kv.key + "' is not a string");
        }
        if (!starts_with(kv.key, "clip.")) continue;
        if (kv.type == 9) {
            // Arrays: clip.cpp checks the element types of those it reads as arrays, and asserts
            // (gguf_get_val_*) on an array where it reads a scalar (fuzzing: block_count).
            if (is_array_key(kv.key)) continue;
            throw ModelLoadError("vision projector " + path + ": metadata '" + kv.key +
                                 "' is an array, which libmtmd reads as a single value");
        }
        const Want w = wanted_type(kv.key);
        if (!type_matches(kv, w)) {
            throw ModelLoadError("vision projector " + path + ": metadata '" + kv.key + "' has type " +
                                 gguf_type_name(kv.type) + ", which libmtmd does not read it as");
        }
        if (w == Want::U32) check_size(path, kv);
        if (kv.key == "clip.has_vision_encoder") has_vision = kv.i != 0;
        if (kv.key == "clip.has_audio_encoder") has_audio = kv.i != 0;
        if (kv.key == "clip.projector_type") type = kv.s;
        if (kv.key == "clip.audio.projector_type") audio_type = kv.s;
        if (kv.key == "clip.audio.embedding_length") a_embd = kv.u;
        if (kv.key == "clip.audio.attention.head_count") a_head = kv.u;
        if (kv.key == "clip.vision.embedding_length") n_embd = kv.u;
        if (kv.key == "clip.vision.attention.head_count") n_head = kv.u;
        if (kv.key == "clip.vision.image_size") image_size = kv.u;
        if (kv.key == "clip.vision.patch_size") patch = kv.u;
    }
    if (audio_type.empty()) audio_type = type;
    if (!has_vision && !has_audio) {
        throw ModelLoadError("vision projector " + path +
                             ": clip.has_vision_encoder and clip.has_audio_encoder are missing or false (neither an "
                             "image nor an audio projector)");
    }
    if (!has_vision && !audio_type_tested(audio_type)) {
        throw ModelLoadError("audio projector " + path + ": projector type '" + audio_type +
                             "' is not supported yet (lmfast takes audio through 'ultravox' projectors)");
    }
    if ((n_head && n_embd % n_head != 0) || (a_head && a_embd % a_head != 0)) {
        throw ModelLoadError("vision projector " + path + ": embedding_length is not a multiple of head_count");
    }
    if (patch && image_size % patch != 0) {
        throw ModelLoadError("vision projector " + path + ": image_size is not a multiple of patch_size");
    }
    return has_audio && audio_type_tested(audio_type);
}

namespace {

mtmd_bitmap * test_image(uint32_t nx, uint32_t ny) {
    std::vector<unsigned char> gray(static_cast<size_t>(nx) * ny * 3, 128);
    return mtmd_bitmap_init(nx, ny, gray.data());
}

// One second of a quiet 440 Hz tone at 16 kHz (what Whisper-style encoders resample to).
mtmd_bitmap * test_clip() {
    std::vector<float> pcm(16000);
    for (size_t i = 0; i < pcm.size(); ++i) pcm[i] = 0.1f * static_cast<float>(std::sin(i * 2 * M_PI * 440 / 16000.0));
    return mtmd_bitmap_init_from_audio(pcm.size(), pcm.data());
}

// libmtmd asserts (aborts the process) on projectors whose tensors disagree with their own header
// when it first builds the encoder graph, and the checks above cannot know every projector type's
// shapes: fuzzing found such aborts in about 1 case in 400 (byte flips, a removed tensor, another
// patch size). So a new projector first encodes test images (and a test clip, for audio) in a forked child; a child that dies
// or hangs marks a projector that would have taken the process with it. The child only runs C++
// and leaves with _exit, never returning to Python. About one encode of a small image on a CPU.
void trial_encode_in_child(const std::string & path, const Model & model, const mtmd_context_params & p) {
#if defined(__linux__)
    const pid_t pid = fork();
    if (pid < 0) return;  // no trial possible: load as before
    if (pid == 0) {
        mtmd_context * ctx = mtmd_init_from_file(path.c_str(), model.get(), p);
        if (!ctx) _exit(3);  // a clean failure: the parent's own load reports it
        for (const auto & [nx, ny] : {std::pair<uint32_t, uint32_t>{32, 32}, {48, 24}, {0, 0}}) {
            if ((nx ? !mtmd_support_vision(ctx) : !mtmd_support_audio(ctx))) continue;
            mtmd_bitmap * bm = nx ? test_image(nx, ny) : test_clip();
            mtmd_input_chunks * chunks = mtmd_input_chunks_init();
            const std::string text = mtmd_default_marker();
            mtmd_input_text in{text.c_str(), text.size(), false, true};
            const mtmd_bitmap * bms[] = {bm};
            if (mtmd_tokenize(ctx, chunks, &in, bms, 1) != 0) _exit(3);
            for (size_t c = 0; c < mtmd_input_chunks_size(chunks); ++c) {
                const mtmd_input_chunk * ch = mtmd_input_chunks_get(chunks, c);
                if (mtmd_input_chunk_get_type(ch) == MTMD_INPUT_CHUNK_TYPE_TEXT) continue;
                if (mtmd_encode_chunk(ctx, ch) != 0) _exit(3);
            }
        }
        _exit(0);
    }
    int status = 0;
    for (int waited_ms = 0;; waited_ms += 10) {
        const pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (r < 0) return;
        if (waited_ms > 60000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            throw ModelLoadError("vision projector " + path + ": a trial encode of a test image did not finish in 60 s");
        }
        usleep(10000);
    }
    if (WIFSIGNALED(status)) {
        throw ModelLoadError("vision projector " + path + " crashed libmtmd (signal " + std::to_string(WTERMSIG(status)) +
                             ") when it encoded a test image in a separate process: its tensors do not match its "
                             "header (a corrupt or mismatched file); lmfast refused it instead of crashing");
    }
#else
    (void) path; (void) model; (void) p;
#endif
}

// libmtmd (clip, mtmd and its helpers) logs through a callback of its own, stderr by default:
// every load printed ~90 lines and every image ~10 at info level, past LMFAST_LOG. It gets
// llama.cpp's callback, which lmfast filters by level (log_filter.h); the forked trial inherits it.
void follow_llama_log() {
    ggml_log_callback cb = nullptr;
    void * user_data = nullptr;
    llama_log_get(&cb, &user_data);
    if (cb) mtmd_helper_log_set(cb, user_data);
}

}  // namespace

Vision::Vision(std::shared_ptr<Model> model, const std::string & path, int32_t n_threads, int32_t flash_attn)
    : model_(std::move(model)), path_(path) {
    const bool audio_tested = check_projector(path);
    follow_llama_log();
    mtmd_context_params p = mtmd_context_params_default();
    p.use_gpu = false;  // the CPU build; a GPU build would follow the model's offload
    p.print_timings = false;
    p.n_threads = n_threads > 0 ? n_threads : 1;
    p.flash_attn_type = static_cast<llama_flash_attn_type>(flash_attn < 0 ? -1 : (flash_attn > 0 ? 1 : 0));
    p.warmup = false;  // the trial encode below builds the graph once
    trial_encode_in_child(path, *model_, p);
    ctx_ = mtmd_init_from_file(path.c_str(), model_->get(), p);
    if (!ctx_) {
        throw ModelLoadError("libmtmd could not load the vision projector " + path + " for " + model_->path() +
                             " (an unsupported projector type, missing tensors, or an output width that does not "
                             "match the model's embedding width; set LMFAST_LOG=info for libmtmd's message)");
    }
    images_ = mtmd_support_vision(ctx_);
    audio_ = audio_tested && mtmd_support_audio(ctx_);
    if ((!images_ && !audio_) || mtmd_decode_use_mrope(ctx_)) {
        mtmd_free(ctx_);
        ctx_ = nullptr;
        throw ModelLoadError("vision projector " + path +
                             ": projectors with M-RoPE positions (Qwen2-VL family) or without vision or audio are "
                             "not supported yet");
    }
    try {
        if (images_) check_markers(test_image(32, 32));
        if (audio_) check_markers(test_clip());
    } catch (...) {
        mtmd_free(ctx_);
        ctx_ = nullptr;
        throw;
    }
}

// libmtmd wraps an image in marker tokens it looks up by text in the model's vocabulary
// ("<fake_token_around_image>" for idefics3); one the vocabulary lacks comes back as -1, which
// llama.cpp's batch asserts on. A tiny gray image tokenized at load finds that out.
void Vision::check_markers(mtmd_bitmap * bm) const {
    std::shared_ptr<mtmd_input_chunks> chunks(mtmd_input_chunks_init(), mtmd_input_chunks_free);
    const std::string text = marker();
    mtmd_input_text in{text.c_str(), text.size(), false, true};
    const mtmd_bitmap * bms[] = {bm};
    const int32_t rc = mtmd_tokenize(ctx_, chunks.get(), &in, bms, 1);
    mtmd_bitmap_free(bm);
    if (rc != 0) throw ModelLoadError("vision projector " + path_ + ": libmtmd could not tokenize a test image or clip");
    const int32_t n_vocab = llama_vocab_n_tokens(model_->vocab());
    for (size_t c = 0; c < mtmd_input_chunks_size(chunks.get()); ++c) {
        const mtmd_input_chunk * ch = mtmd_input_chunks_get(chunks.get(), c);
        if (mtmd_input_chunk_get_type(ch) != MTMD_INPUT_CHUNK_TYPE_TEXT) continue;
        size_t n = 0;
        const llama_token * t = mtmd_input_chunk_get_tokens_text(ch, &n);
        for (size_t i = 0; i < n; ++i) {
            if (t[i] < 0 || t[i] >= n_vocab) {
                throw ModelLoadError("vision projector " + path_ + " does not fit " + model_->path() +
                                     ": the marker tokens its projector type puts around images or audio are not in the "
                                     "model's vocabulary (the projector was made for another model)");
            }
        }
    }
}

Vision::~Vision() {
    if (ctx_) mtmd_free(ctx_);
}

const char * Vision::marker() { return mtmd_default_marker(); }

namespace {

uint64_t fnv1a(const unsigned char * p, size_t n, uint64_t h = 1469598103934665603ull) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

// Placeholder tokens of one image chunk: a hash of its pixels and its place among the chunks of
// the same image (a tiled image gives an overview and slices), spread over the vocabulary.
void add_placeholders(std::vector<llama_token> & out, uint64_t h, size_t n, int32_t n_vocab) {
    for (size_t i = 0; i < n; ++i) {
        uint64_t x = h + 0x9e3779b97f4a7c15ull * (i + 1);
        x = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ull;
        out.push_back(static_cast<llama_token>((x ^ (x >> 29)) % static_cast<uint64_t>(n_vocab)));
    }
}

// Sizes read from the file's header by the decoder libmtmd links (stb_image, compiled into it).
extern "C" int stbi_info_from_memory(const unsigned char * buffer, int len, int * x, int * y, int * comp);

// An image is decoded to 3 bytes a pixel before anything scales it: a small file that claims a
// huge size (a decompression bomb) is refused from its header. 64 megapixels is 192 MB decoded.
constexpr int64_t kMaxPixels = 64ll << 20;

void check_header(const std::string & img, size_t i) {
    if (img.size() > static_cast<size_t>(INT32_MAX)) {
        throw InvalidArgument("image " + std::to_string(i + 1) + " is larger than 2 GiB");
    }
    int x = 0, y = 0, comp = 0;
    if (stbi_info_from_memory(reinterpret_cast<const unsigned char *>(img.data()), static_cast<int>(img.size()), &x,
                              &y, &comp) &&
        static_cast<int64_t>(x) * y > kMaxPixels) {
        throw InvalidArgument("image " + std::to_string(i + 1) + " is " + std::to_string(x) + " x " +
                              std::to_string(y) + " pixels, more than the 64 megapixels lmfast decodes: scale it down");
    }
}

std::string media_name(const Vision & v, size_t i) {
    return std::string(v.audio() && !v.images() ? "audio clip " : v.audio() ? "file " : "image ") +
           std::to_string(i + 1);
}

// The formats libmtmd's helper reads as audio (its own test: RIFF/WAVE, ID3 or an MPEG frame sync, fLaC).
bool looks_like_audio(const std::string & b) {
    const auto * u = reinterpret_cast<const unsigned char *>(b.data());
    return b.size() >= 12 && ((b.compare(0, 4, "RIFF") == 0 && b.compare(8, 4, "WAVE") == 0) ||
                              b.compare(0, 3, "ID3") == 0 || (u[0] == 0xFF && (u[1] & 0xE0) == 0xE0) ||
                              b.compare(0, 4, "fLaC") == 0);
}

// An audio file larger than this is refused before it is decoded to 16 kHz floats (64 MiB is
// ~35 minutes of 16-bit 16 kHz mono WAV: 70 chunks of Whisper's 30 s, far past any context).
// A WAV header claiming more samples than the file holds decodes to what it holds (tested).
constexpr int64_t kMaxAudioBytes = 64ll << 20;

// One image or audio clip decoded by libmtmd's helper (stb_image; miniaudio for WAV/MP3/FLAC),
// refused where the projector does not read that kind of media.
mtmd_bitmap * decode_media(const Vision & v, const std::string & buf, size_t i) {
    const bool audio = looks_like_audio(buf);
    if (audio && !v.audio()) {
        throw InvalidArgument(media_name(v, i) + " is an audio file, and the projector " + v.path() +
                              " reads no audio");
    }
    if (!audio && !v.images()) {
        throw InvalidArgument(media_name(v, i) + " is not a WAV, MP3 or FLAC audio file (the projector " + v.path() +
                              " reads audio, not images)");
    }
    if (audio && static_cast<int64_t>(buf.size()) > kMaxAudioBytes) {
        throw InvalidArgument(media_name(v, i) + " is larger than the 64 MiB of audio lmfast decodes: send a shorter clip");
    }
    auto w = mtmd_helper_bitmap_init_from_buf(v.ctx(), reinterpret_cast<const unsigned char *>(buf.data()), buf.size(),
                                              false, mtmd_helper_init_opt_default());
    if (w.bitmap && mtmd_bitmap_is_audio(w.bitmap) == audio && mtmd_bitmap_get_n_bytes(w.bitmap) > 0) return w.bitmap;
    if (w.bitmap) mtmd_bitmap_free(w.bitmap);
    throw InvalidArgument(media_name(v, i) + (audio ? " could not be decoded (a damaged or truncated WAV, MP3 or FLAC file)"
                                                    : " could not be decoded (not a JPEG, PNG, BMP, GIF, TGA, PSD, HDR or "
                                                      "PNM image, or a truncated file)"));
}

struct Bitmaps {
    std::vector<mtmd_bitmap *> v;
    ~Bitmaps() {
        for (auto * b : v) mtmd_bitmap_free(b);
    }
};

}  // namespace

std::shared_ptr<const VisionPrompt> VisionPrompt::make(std::shared_ptr<Vision> vision, const std::string & text,
                                                      const std::vector<std::string> & images) {
    auto vp = std::make_shared<VisionPrompt>();
    vp->vision = vision;
    vp->chunks.reset(mtmd_input_chunks_init(), mtmd_input_chunks_free);
    Bitmaps bitmaps;
    std::lock_guard<std::mutex> lk(vision->mu());
    for (size_t i = 0; i < images.size(); ++i) {
        const auto & img = images[i];
        if (img.empty()) throw InvalidArgument(media_name(*vision, i) + " is empty (0 bytes)");
        check_header(img, i);
        mtmd_bitmap * bm = decode_media(*vision, img, i);
        bitmaps.v.push_back(bm);
        // The id travels with every chunk of the image (overview and slices; an audio clip's 30 s
        // chunks): its placeholders. An audio bitmap's data is its decoded 16 kHz samples.
        const uint64_t h = fnv1a(mtmd_bitmap_get_data(bm), mtmd_bitmap_get_n_bytes(bm));
        mtmd_bitmap_set_id(bm, std::to_string(h).c_str());
    }
    mtmd_input_text in{text.c_str(), text.size(), /*add_special=*/true, /*parse_special=*/true};
    std::vector<const mtmd_bitmap *> cb(bitmaps.v.begin(), bitmaps.v.end());
    const int32_t rc = mtmd_tokenize(vision->ctx(), vp->chunks.get(), &in, cb.data(), cb.size());
    if (rc == 1) {
        throw InvalidArgument("the chat has " + std::to_string(images.size()) +
                              " images but its rendered prompt marks a different number of places for them");
    }
    if (rc != 0) throw InvalidArgument("libmtmd could not preprocess the images (error " + std::to_string(rc) + ")");
    const int32_t n_vocab = llama_vocab_n_tokens(vision->model()->vocab());
    for (size_t c = 0; c < mtmd_input_chunks_size(vp->chunks.get()); ++c) {
        const mtmd_input_chunk * ch = mtmd_input_chunks_get(vp->chunks.get(), c);
        Span s;
        s.begin = vp->tokens.size();
        s.chunk = ch;
        s.image = mtmd_input_chunk_get_type(ch) != MTMD_INPUT_CHUNK_TYPE_TEXT;
        if (s.image) {
            s.n = mtmd_input_chunk_get_n_tokens(ch);
            const char * id = mtmd_input_chunk_get_id(ch);
            const uint64_t h = fnv1a(reinterpret_cast<const unsigned char *>(id ? id : ""), id ? std::strlen(id) : 0, 1469598103934665603ull ^ c);
            add_placeholders(vp->tokens, h, s.n, n_vocab);
            vp->n_image_tokens += static_cast<int32_t>(s.n);
        } else {
            size_t n = 0;
            const llama_token * t = mtmd_input_chunk_get_tokens_text(ch, &n);
            vp->tokens.insert(vp->tokens.end(), t, t + n);
            vp->text_tokens.insert(vp->text_tokens.end(), t, t + n);
            s.n = n;
        }
        vp->spans.push_back(s);
    }
    if (vp->spans.empty() || vp->spans.back().image || vp->spans.back().n == 0) {
        throw InvalidArgument("a prompt with images must end with text (the chat template's assistant prefix)");
    }
    return vp;
}

}  // namespace lmfast
