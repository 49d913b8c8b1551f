#include "gguf_check.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <climits>
#include <unordered_map>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "errors.h"
#include "ggml.h"

namespace lmfast {

namespace {

// GGUF value type ids (gguf.h's enum gguf_type).
enum : uint32_t {
    T_UINT8 = 0, T_INT8 = 1, T_UINT16 = 2, T_INT16 = 3, T_UINT32 = 4, T_INT32 = 5, T_FLOAT32 = 6,
    T_BOOL = 7, T_STRING = 8, T_ARRAY = 9, T_UINT64 = 10, T_INT64 = 11, T_FLOAT64 = 12, T_COUNT = 13,
};


// Byte size of a scalar type; 0 for string, array and invalid ids.
uint64_t scalar_size(uint32_t t) {
    switch (t) {
        case T_UINT8: case T_INT8: case T_BOOL: return 1;
        case T_UINT16: case T_INT16: return 2;
        case T_UINT32: case T_INT32: case T_FLOAT32: return 4;
        case T_UINT64: case T_INT64: case T_FLOAT64: return 8;
        default: return 0;
    }
}

// Limits that llama.cpp's reader applies too (gguf.cpp), or that no real file comes near.
constexpr uint64_t MAX_ARRAY_ELEMENTS = 1ull << 30;  // GGUF_MAX_ARRAY_ELEMENTS
constexpr uint64_t MAX_KEY_LEN = 1 << 16;

// Reads the file through a window buffer; every read and skip is checked against
// the file size first, so nothing is allocated or read on the word of the file alone.
class Reader {
public:
    Reader(const std::string & path) : path_(path) {
        fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd_ < 0) {
            throw ModelLoadError("cannot open model file " + path + ": " + std::strerror(errno));
        }
        struct stat st {};
        if (fstat(fd_, &st) != 0) {
            ::close(fd_);
            throw ModelLoadError("cannot stat model file " + path + ": " + std::strerror(errno));
        }
        size_ = static_cast<uint64_t>(st.st_size);
    }
    ~Reader() { ::close(fd_); }
    Reader(const Reader &) = delete;
    Reader & operator=(const Reader &) = delete;

    uint64_t size() const { return size_; }
    uint64_t pos() const { return pos_; }
    uint64_t remaining() const { return size_ - pos_; }

    [[noreturn]] void fail(const std::string & what, uint64_t at) const {
        throw ModelLoadError("corrupt GGUF file " + path_ + ": " + what + " (at byte offset " + std::to_string(at) + ")");
    }

    void need(uint64_t n, const std::string & field) const {
        if (n > remaining()) {
            fail(field + " needs " + std::to_string(n) + " bytes but only " + std::to_string(remaining()) +
                     " remain in the file (" + std::to_string(size_) + " bytes)",
                 pos_);
        }
    }

    void read(void * dst, uint64_t n, const std::string & field) {
        need(n, field);
        char * out = static_cast<char *>(dst);
        while (n > 0) {
            if (pos_ < buf_start_ || pos_ >= buf_start_ + buf_.size()) refill();
            const uint64_t in_buf = buf_start_ + buf_.size() - pos_;
            const uint64_t k = std::min(n, in_buf);
            std::memcpy(out, buf_.data() + (pos_ - buf_start_), k);
            out += k;
            pos_ += k;
            n -= k;
        }
    }

    void skip(uint64_t n, const std::string & field) {
        need(n, field);
        pos_ += n;
    }

    template <typename T> T get(const std::string & field) {
        T v;
        read(&v, sizeof v, field);
        return v;
    }

    // A GGUF string: uint64 length, then the bytes. Bounded by max_len and the file.
    std::string string(const std::string & field, uint64_t max_len) {
        const uint64_t at = pos_;
        const uint64_t len = get<uint64_t>(field + " length");
        if (len > max_len) {
            fail(field + " has length " + std::to_string(len) + ", over the limit of " + std::to_string(max_len), at);
        }
        need(len, field);
        std::string s(len, '\0');
        read(s.data(), len, field);
        return s;
    }

    // Element j of a string array, read into *out or skipped when out is null. The field
    // name with the index is built only for an error (arrays have ~10^5 elements).
    void string_element(const std::string & array_field, uint64_t j, std::string * out) {
        if (remaining() >= 8) {
            uint64_t len;
            read(&len, 8, array_field);
            if (len <= remaining()) {
                if (out) {
                    out->assign(len, '\0');
                    read(out->data(), len, array_field);
                } else {
                    pos_ += len;
                }
                return;
            }
            pos_ -= 8;  // report the failure at the element's start
        }
        skip_string(array_field + " element #" + std::to_string(j));  // fails, naming the element
    }

    // Skips a string, returning its length.
    uint64_t skip_string(const std::string & field) {
        const uint64_t len = get<uint64_t>(field + " length");
        skip(len, field);
        return len;
    }

private:
    void refill() {
        const uint64_t want = std::min<uint64_t>(kWindow, size_ - pos_);
        buf_.resize(want);
        uint64_t got = 0;
        while (got < want) {
            const ssize_t r = ::pread(fd_, buf_.data() + got, want - got, static_cast<off_t>(pos_ + got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) fail(std::string("read error: ") + (r < 0 ? std::strerror(errno) : "unexpected end of file"), pos_ + got);
            got += static_cast<uint64_t>(r);
        }
        buf_start_ = pos_;
    }

    static constexpr uint64_t kWindow = 1 << 20;
    std::string path_;
    int fd_ = -1;
    uint64_t size_ = 0;
    uint64_t pos_ = 0;
    uint64_t buf_start_ = 0;
    std::vector<char> buf_;
};

bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

bool ends_with(const std::string & s, const char * suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Hyperparameters that llama.cpp asserts on (aborts) instead of rejecting, found by the fuzz test
// (tests/test_fuzz_gguf.py). The key prefix is the architecture, so only the suffix is matched.
void check_hparam(const Reader & r, const std::string & key, uint32_t type, const unsigned char * v, uint64_t at) {
    if (ends_with(key, ".block_count")) {
        // llama-model.cpp: GGML_ASSERT(n_layer > 0 && n_layer <= LLAMA_MAX_LAYERS)
        int64_t n = 0;
        switch (type) {
            case T_UINT8: n = v[0]; break;
            case T_INT8: n = static_cast<int8_t>(v[0]); break;
            case T_UINT16: { uint16_t x; std::memcpy(&x, v, 2); n = x; break; }
            case T_INT16: { int16_t x; std::memcpy(&x, v, 2); n = x; break; }
            case T_UINT32: { uint32_t x; std::memcpy(&x, v, 4); n = x; break; }
            case T_INT32: { int32_t x; std::memcpy(&x, v, 4); n = x; break; }
            case T_UINT64: { uint64_t x; std::memcpy(&x, v, 8); n = x > 1000000 ? 1000000 : static_cast<int64_t>(x); break; }
            case T_INT64: { int64_t x; std::memcpy(&x, v, 8); n = x; break; }
            default: return;  // llama.cpp rejects other types itself
        }
        if (n < 1 || n > 512) {
            r.fail("metadata '" + key + "' is " + std::to_string(n) + " (llama.cpp supports 1..512 layers)", at);
        }
    } else if (ends_with(key, ".layer_norm_rms_epsilon") || ends_with(key, ".layer_norm_epsilon") ||
               ends_with(key, ".group_norm_epsilon")) {
        // ggml's norm ops: GGML_ASSERT(eps >= 0.0f) at the first decode
        double e = 0;
        if (type == T_FLOAT32) {
            float f;
            std::memcpy(&f, v, 4);
            e = f;
        } else if (type == T_FLOAT64) {
            std::memcpy(&e, v, 8);
        } else {
            return;
        }
        if (!(e >= 0.0) || !std::isfinite(e)) {
            r.fail("metadata '" + key + "' is " + std::to_string(e) + " (must be a finite number >= 0)", at);
        }
    }
}

bool as_int(uint32_t type, const unsigned char * v, int64_t & out) {
    switch (type) {
        case T_UINT8: out = v[0]; return true;
        case T_INT8: out = static_cast<int8_t>(v[0]); return true;
        case T_UINT16: { uint16_t x; std::memcpy(&x, v, 2); out = x; return true; }
        case T_INT16: { int16_t x; std::memcpy(&x, v, 2); out = x; return true; }
        case T_UINT32: { uint32_t x; std::memcpy(&x, v, 4); out = x; return true; }
        case T_INT32: { int32_t x; std::memcpy(&x, v, 4); out = x; return true; }
        case T_UINT64: { uint64_t x; std::memcpy(&x, v, 8); out = x > INT64_MAX ? INT64_MAX : static_cast<int64_t>(x); return true; }
        case T_INT64: { int64_t x; std::memcpy(&x, v, 8); out = x; return true; }
        default: return false;
    }
}

GgufKv scalar_kv(const std::string & key, uint32_t type, const unsigned char * v) {
    GgufKv kv{key, type};
    switch (type) {
        case T_UINT8: case T_UINT16: case T_UINT32: case T_UINT64: {
            uint64_t x = 0;  // little-endian bytes, as GGUF stores them (and as x86/arm read them)
            std::memcpy(&x, v, scalar_size(type));
            kv.u = x;
            break;
        }
        case T_FLOAT32: { float x; std::memcpy(&x, v, 4); kv.f = x; break; }
        case T_FLOAT64: { std::memcpy(&kv.f, v, 8); break; }
        case T_BOOL: kv.i = v[0] != 0; break;
        default: as_int(type, v, kv.i); break;  // the signed integers
    }
    return kv;
}

// The set of token texts seen so far: open addressing over one byte arena, so a vocabulary
// of 150k tokens costs a few allocations rather than one hash node per token (the
// duplicate check was most of the header check's time).
class TokenSet {
public:
    explicit TokenSet(uint64_t n) {
        size_t cap = 16;
        while (cap < 2 * n) cap *= 2;
        slots_.assign(cap, kEmpty);
        spans_.reserve(n);
    }

    // False if the text is already in the set.
    bool insert(std::string_view text) {
        const size_t mask = slots_.size() - 1;
        for (size_t i = std::hash<std::string_view>{}(text) & mask;; i = (i + 1) & mask) {
            if (slots_[i] == kEmpty) {
                slots_[i] = static_cast<uint32_t>(spans_.size());
                spans_.push_back({arena_.size(), text.size()});
                arena_.append(text);
                return true;
            }
            const auto & sp = spans_[slots_[i]];
            if (std::string_view(arena_).substr(sp.first, sp.second) == text) return false;
        }
    }

private:
    static constexpr uint32_t kEmpty = UINT32_MAX;
    std::vector<uint32_t> slots_;                     // index into spans_, or kEmpty
    std::vector<std::pair<size_t, size_t>> spans_;    // offset and length in arena_
    std::string arena_;
};

// Values the relation checks need, with the byte offset each was read at.
struct Meta {
    std::unordered_map<std::string, std::pair<int64_t, uint64_t>> ints;
    std::unordered_map<std::string, std::pair<std::string, uint64_t>> strs;
    uint64_t byte_token_at = 0;  // offset of the first token of type BYTE (6), 0 if none
};

// Relations between hyperparameters that llama.cpp asserts (llama-model.cpp load_hparams,
// llama-vocab.cpp token_to_byte) instead of rejecting the file.
void check_relations(const Reader & r, const Meta & m) {
    auto str = [&](const std::string & k) -> const std::pair<std::string, uint64_t> * {
        auto it = m.strs.find(k);
        return it == m.strs.end() ? nullptr : &it->second;
    };
    if (const auto * tm = str("tokenizer.ggml.model"); tm && m.byte_token_at) {
        static const char * with_bytes[] = {"llama", "gpt2", "t5", "gemma4", "hybriddna", "whitespace"};
        bool ok = false;
        for (const char * w : with_bytes) ok = ok || tm->first == w;
        if (!ok) {
            r.fail("tokenizer.ggml.token_type marks byte tokens, which the '" + tm->first.substr(0, 64) +
                       "' tokenizer does not have",
                   m.byte_token_at);
        }
    }
    const auto * arch_p = str("general.architecture");
    if (!arch_p) return;  // llama.cpp reports a missing architecture itself
    const std::string arch = arch_p->first;
    auto get = [&](const char * suffix, int64_t dflt, uint64_t * at = nullptr) {
        auto it = m.ints.find(arch + suffix);
        if (it == m.ints.end()) return dflt;
        if (at) *at = it->second.second;
        return it->second.first;
    };
    uint64_t at = 0;
    const int64_t n_layer = get(".block_count", 1);
    if (get(".nextn_predict_layers", 0, &at) > n_layer) r.fail(arch + ".nextn_predict_layers exceeds the block count", at);
    if (get(".posnet.block_count", 0, &at) > n_layer) r.fail(arch + ".posnet.block_count exceeds the block count", at);
    if (get(".convnext.block_count", 0, &at) > n_layer) r.fail(arch + ".convnext.block_count exceeds the block count", at);
    uint64_t at_n = 0, at_used = 0, at_g = 0, at_gu = 0;
    const int64_t n_expert = get(".expert_count", 0, &at_n);
    const int64_t n_used = get(".expert_used_count", 0, &at_used);
    const int64_t n_groups = get(".expert_group_count", 0, &at_g);
    const int64_t n_group_used = get(".expert_group_used_count", 0, &at_gu);
    if (n_expert < 0 || n_expert > 1024) r.fail(arch + ".expert_count " + std::to_string(n_expert) + " is outside 0..1024", at_n);
    if (n_used < 0 || n_used > n_expert) {
        r.fail(arch + ".expert_used_count " + std::to_string(n_used) + " is outside 0..expert_count (" +
                   std::to_string(n_expert) + ")",
               at_used ? at_used : at_n);
    }
    if (n_expert > 0) {
        if (n_used == 0) r.fail(arch + ".expert_count is set but expert_used_count is 0 or missing", at_n);
        if (n_groups < 0 || n_groups >= n_expert) r.fail(arch + ".expert_group_count must be below expert_count", at_g);
        if (n_groups > 1 && (n_expert % n_groups != 0 || n_group_used <= 0 || n_group_used >= n_groups)) {
            r.fail(arch + ".expert_group_count / expert_group_used_count are inconsistent", at_gu ? at_gu : at_g);
        }
    } else if (n_groups != 0) {
        r.fail(arch + ".expert_group_count is set without experts", at_g);
    }
    // Head counts multiply into tensor shapes as 32-bit values: a count near 2^31 wraps the
    // K/V widths around to the shapes the tensors have, the load passes, and a reshape in the
    // graph aborts when the first context is made (fuzz test: head_count_kv 2^31 + 2). Per-layer
    // arrays are checked by their largest value.
    uint64_t at_h = 0, at_hkv = 0;
    const int64_t n_head = get(".attention.head_count", 0, &at_h);
    const int64_t n_head_kv = get(".attention.head_count_kv", 0, &at_hkv);
    if (n_head < 0 || n_head > 4096) r.fail(arch + ".attention.head_count " + std::to_string(n_head) + " is outside 0..4096", at_h);
    if (n_head_kv < 0 || n_head_kv > 4096 || (n_head > 0 && n_head_kv > n_head)) {
        r.fail(arch + ".attention.head_count_kv " + std::to_string(n_head_kv) + " is outside 0..head_count (" +
                   std::to_string(n_head) + ")",
               at_hkv);
    }
    if (const auto * rs = str(arch + ".rope.scaling.type")) {
        const std::string & v = rs->first;
        if (v != "none" && v != "linear" && v != "yarn" && v != "longrope") {
            r.fail(arch + ".rope.scaling.type '" + v.substr(0, 64) + "' is not none, linear, yarn or longrope", rs->second);
        }
    }
}

}  // namespace

GgufKv::Kind GgufKv::kind() const {
    switch (type) {
        case T_UINT8: case T_UINT16: case T_UINT32: case T_UINT64: return Kind::Unsigned;
        case T_INT8: case T_INT16: case T_INT32: case T_INT64: return Kind::Signed;
        case T_FLOAT32: case T_FLOAT64: return Kind::Float;
        case T_BOOL: return Kind::Bool;
        case T_STRING: return Kind::String;
        default: return Kind::Array;  // the checker admits no other type
    }
}

const char * gguf_type_name(uint32_t t) {
    static const char * names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                   "bool", "string", "array", "uint64", "int64", "float64"};
    return t < T_COUNT ? names[t] : "invalid";
}

GgufSummary validate_gguf_file(const std::string & path, std::vector<GgufKv> * metadata) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) {
        throw ModelLoadError("model file not found: " + path);
    }
    if (S_ISDIR(st.st_mode)) {
        throw ModelLoadError("model path is a directory, not a GGUF file: " + path);
    }
    if (!S_ISREG(st.st_mode)) {
        throw ModelLoadError("model path is not a regular file: " + path);
    }
    Reader r(path);
    GgufSummary out;
    if (r.size() < 24) {
        throw ModelLoadError("not a GGUF model file (only " + std::to_string(r.size()) +
                             " bytes, shorter than a GGUF header): " + path);
    }
    char magic[4];
    r.read(magic, 4, "magic");
    if (std::memcmp(magic, "GGUF", 4) != 0) {
        throw ModelLoadError("not a GGUF model file (bad magic at offset 0): " + path);
    }
    out.version = r.get<uint32_t>("version");
    if (out.version < 2 || out.version > 3) {
        throw ModelLoadError("unsupported GGUF version " + std::to_string(out.version) +
                             " at offset 4 (lmfast reads versions 2 and 3): " + path);
    }
    out.n_tensors = r.get<uint64_t>("tensor count");
    out.n_kv = r.get<uint64_t>("metadata count");
    // A key/value pair takes at least 8 (key length) + 1 (key) + 4 (type) + 1 bytes; a tensor
    // info at least 8 + 1 (name) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset) bytes.
    if (out.n_kv > r.remaining() / 14) {
        r.fail("metadata count " + std::to_string(out.n_kv) + " cannot fit in a file of " +
                   std::to_string(r.size()) + " bytes",
               16);
    }
    if (out.n_tensors > r.remaining() / 33) {
        r.fail("tensor count " + std::to_string(out.n_tensors) + " cannot fit in a file of " +
                   std::to_string(r.size()) + " bytes",
               8);
    }

    // ---- key/value pairs --------------------------------------------------------------------
    std::unordered_set<std::string> keys;
    keys.reserve(out.n_kv);
    Meta meta;
    bool have_alignment = false;
    for (uint64_t i = 0; i < out.n_kv; ++i) {
        const uint64_t key_at = r.pos();
        const std::string field = "metadata key #" + std::to_string(i);
        std::string key = r.string(field, MAX_KEY_LEN);
        if (key.empty()) r.fail(field + " is empty", key_at);
        if (!keys.insert(key).second) r.fail("duplicate metadata key '" + key + "'", key_at);
        const std::string kf = "metadata '" + key + "'";

        const uint64_t type_at = r.pos();
        const uint32_t type = r.get<uint32_t>(kf + " type");
        if (type >= T_COUNT) {
            r.fail(kf + " has invalid value type " + std::to_string(type), type_at);
        }
        if (key == "general.alignment") {
            if (type != T_UINT32) r.fail("general.alignment must be a uint32, not " + std::string(gguf_type_name(type)), type_at);
            const uint64_t at = r.pos();
            const uint32_t a = r.get<uint32_t>("general.alignment");
            if (!is_power_of_two(a)) r.fail("general.alignment " + std::to_string(a) + " is not a power of two", at);
            // ggml-backend asserts that mapped tensor data are 32-byte aligned (TENSOR_ALIGNMENT).
            if (a < 32) r.fail("general.alignment " + std::to_string(a) + " is below 32, which llama.cpp needs", at);
            out.alignment = a;
            have_alignment = true;
            if (metadata) metadata->push_back({key, type, 0, a});
            continue;
        }
        if (type == T_STRING) {
            const bool checked =
                key == "general.architecture" || key == "tokenizer.ggml.model" || ends_with(key, ".rope.scaling.type");
            if (checked || metadata) {
                const uint64_t at = r.pos();
                std::string v = r.string(kf, r.remaining());
                if (metadata) metadata->push_back({key, type, 0, 0, 0.0, v});
                if (checked) meta.strs[key] = {std::move(v), at};
            } else {
                r.skip_string(kf);
            }
            continue;
        }
        if (type != T_ARRAY) {
            const uint64_t at = r.pos();
            unsigned char v[8] = {0};
            r.read(v, scalar_size(type), kf);
            check_hparam(r, key, type, v, at);
            int64_t iv;
            if (as_int(type, v, iv)) meta.ints[key] = {iv, at};
            if (metadata) metadata->push_back(scalar_kv(key, type, v));
            continue;
        }
        // Arrays: element type, count, elements.
        const uint64_t et_at = r.pos();
        const uint32_t et = r.get<uint32_t>(kf + " array element type");
        if (et >= T_COUNT) r.fail(kf + " has invalid array element type " + std::to_string(et), et_at);
        if (et == T_ARRAY) r.fail(kf + " is an array of arrays, which llama.cpp does not read", et_at);
        const uint64_t n_at = r.pos();
        const uint64_t n = r.get<uint64_t>(kf + " array length");
        if (n > MAX_ARRAY_ELEMENTS) {
            r.fail(kf + " has " + std::to_string(n) + " elements, over the limit of " +
                       std::to_string(MAX_ARRAY_ELEMENTS),
                   n_at);
        }
        if (metadata) {
            GgufKv kv{key, type};
            kv.array_type = et;
            kv.array_len = n;
            metadata->push_back(std::move(kv));
        }
        if (et != T_STRING) {
            const uint64_t es = scalar_size(et);
            if (n > r.remaining() / es) {
                r.fail(kf + " has " + std::to_string(n) + " " + gguf_type_name(et) + " elements, more than the " +
                           std::to_string(r.remaining()) + " bytes left in the file can hold",
                       n_at);
            }
            const bool is_types = key == "tokenizer.ggml.token_type";
            if (is_types || ends_with(key, ".expert_used_count") || ends_with(key, ".attention.head_count") ||
                ends_with(key, ".attention.head_count_kv")) {
                // read: byte tokens (type 6) and the largest per-layer expert and head counts are
                // checked below
                int64_t mx = INT64_MIN;
                for (uint64_t j = 0; j < n; ++j) {
                    const uint64_t at = r.pos();
                    unsigned char v[8] = {0};
                    r.read(v, es, kf);
                    int64_t iv;
                    if (!as_int(et, v, iv)) continue;
                    if (is_types && iv == 6 && meta.byte_token_at == 0) meta.byte_token_at = at;
                    mx = std::max(mx, iv);
                }
                if (!is_types && n > 0) meta.ints[key] = {mx, n_at};
                continue;
            }
            r.skip(n * es, kf + " array data");
            continue;
        }
        if (n > r.remaining() / 8) {
            r.fail(kf + " has " + std::to_string(n) + " strings, more than the " + std::to_string(r.remaining()) +
                       " bytes left in the file can hold",
                   n_at);
        }
        if (key == "tokenizer.ggml.tokens") {
            // llama.cpp asserts (aborts) when two tokens have the same text; an empty token
            // is renamed "[EMPTY_<index>]" first, so the same renaming is applied here.
            // Found by the fuzz test, like the other checks marked so below.
            if (n > static_cast<uint64_t>(INT32_MAX)) r.fail("tokenizer.ggml.tokens has too many tokens", n_at);
            TokenSet seen(n);
            std::string tok;
            for (uint64_t j = 0; j < n; ++j) {
                const uint64_t at = r.pos();
                r.string_element(kf, j, &tok);
                // llama.cpp takes each token as a C string, so text after a NUL byte is lost.
                tok.resize(std::strlen(tok.c_str()));
                if (tok.empty()) tok = "[EMPTY_" + std::to_string(j) + "]";
                if (!seen.insert(tok)) {
                    r.fail("tokenizer.ggml.tokens has a duplicate token at index " + std::to_string(j), at);
                }
            }
            continue;
        }
        for (uint64_t j = 0; j < n; ++j) r.string_element(kf, j, nullptr);
    }

    check_relations(r, meta);

    // ---- tensor infos -----------------------------------------------------------------------
    struct Info {
        uint64_t offset, nbytes, at;
        std::string name;
    };
    std::vector<Info> infos;
    infos.reserve(out.n_tensors);  // checked against the file size above
    std::unordered_set<std::string> names;
    names.reserve(out.n_tensors);
    for (uint64_t i = 0; i < out.n_tensors; ++i) {
        const uint64_t at = r.pos();
        const std::string field = "tensor #" + std::to_string(i);
        std::string name = r.string(field + " name", GGML_MAX_NAME - 1);
        name.resize(std::strlen(name.c_str()));  // ggml keeps names as C strings
        if (name.empty()) r.fail(field + " has an empty name", at);
        if (!names.insert(name).second) r.fail("duplicate tensor name '" + name + "'", at);
        const std::string tf = "tensor '" + name + "'";

        const uint64_t nd_at = r.pos();
        const uint32_t n_dims = r.get<uint32_t>(tf + " n_dims");
        if (n_dims < 1 || n_dims > GGML_MAX_DIMS) {
            r.fail(tf + " has " + std::to_string(n_dims) + " dimensions (must be 1.." + std::to_string(GGML_MAX_DIMS) + ")",
                   nd_at);
        }
        int64_t ne[GGML_MAX_DIMS] = {1, 1, 1, 1};
        uint64_t nelements = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t d_at = r.pos();
            ne[d] = r.get<int64_t>(tf + " dimension " + std::to_string(d));
            if (ne[d] <= 0) r.fail(tf + " dimension " + std::to_string(d) + " is " + std::to_string(ne[d]), d_at);
            if (static_cast<uint64_t>(ne[d]) > static_cast<uint64_t>(INT64_MAX) / nelements) {
                r.fail(tf + " has more elements than fit in 64 bits", d_at);
            }
            nelements *= static_cast<uint64_t>(ne[d]);
        }
        const uint64_t type_at = r.pos();
        const uint32_t type = r.get<uint32_t>(tf + " type");
        if (type >= GGML_TYPE_COUNT || ggml_blck_size(static_cast<ggml_type>(type)) <= 0 ||
            ggml_type_size(static_cast<ggml_type>(type)) == 0) {
            r.fail(tf + " has invalid or unsupported ggml type " + std::to_string(type), type_at);
        }
        const ggml_type gt = static_cast<ggml_type>(type);
        switch (gt) {
            // Types ggml uses only for intermediate values or integers: the CPU backend has no
            // matrix product for them and calls a null function when they are weights.
            case GGML_TYPE_Q8_1: case GGML_TYPE_Q8_K: case GGML_TYPE_I8: case GGML_TYPE_I16:
            case GGML_TYPE_I32: case GGML_TYPE_I64: case GGML_TYPE_F64:
                r.fail(tf + " has type " + ggml_type_name(gt) + ", which is not a weight type llama.cpp computes with",
                       type_at);
            default: break;
        }
        const uint64_t blck = static_cast<uint64_t>(ggml_blck_size(gt));
        if (static_cast<uint64_t>(ne[0]) % blck != 0) {
            r.fail(tf + " of type " + ggml_type_name(gt) + " has rows of " + std::to_string(ne[0]) +
                       " elements, not a multiple of the block size " + std::to_string(blck),
                   type_at);
        }
        if (gt != GGML_TYPE_F32 && ne[1] == 1 && ne[2] == 1 && ne[3] == 1) {
            // Norm weights and biases: ggml's CPU ops take them only as f32 and abort otherwise
            // (converters and llama-quantize always store one-dimensional tensors as f32).
            r.fail(tf + " is one-dimensional but of type " + ggml_type_name(gt) + " (must be f32)", type_at);
        }
        const uint64_t nblocks = nelements / blck;
        const uint64_t tsize = ggml_type_size(gt);
        if (nblocks > r.size() / tsize) {
            r.fail(tf + " would need " + std::to_string(nblocks) + " blocks of " + std::to_string(tsize) +
                       " bytes, more than the whole file (" + std::to_string(r.size()) + " bytes)",
                   nd_at);
        }
        const uint64_t off_at = r.pos();
        const uint64_t offset = r.get<uint64_t>(tf + " data offset");
        infos.push_back({offset, nblocks * tsize, off_at, std::move(name)});
    }

    // ---- data section -----------------------------------------------------------------------
    const uint64_t align = out.alignment;
    (void)have_alignment;
    const uint64_t header_end = r.pos();
    uint64_t data_offset = header_end;
    if (out.n_tensors > 0) {
        data_offset = (header_end + align - 1) / align * align;
        if (data_offset > r.size()) {
            r.fail("the tensor data section starts past the end of the file", header_end);
        }
    }
    out.data_offset = data_offset;
    const uint64_t data_avail = r.size() - data_offset;
    uint64_t expected = 0;  // llama.cpp requires the tensors in file order, each padded to the alignment
    for (const Info & ti : infos) {
        const std::string tf = "tensor '" + ti.name + "'";
        if (ti.offset % align != 0) {
            r.fail(tf + " data offset " + std::to_string(ti.offset) + " is not a multiple of the alignment " +
                       std::to_string(align),
                   ti.at);
        }
        if (ti.offset > data_avail || ti.nbytes > data_avail - ti.offset) {
            r.fail(tf + " data (offset " + std::to_string(ti.offset) + ", " + std::to_string(ti.nbytes) +
                       " bytes) runs past the end of the file: the data section holds " + std::to_string(data_avail) +
                       " bytes",
                   ti.at);
        }
        if (ti.offset != expected) {
            r.fail(tf + " data offset " + std::to_string(ti.offset) + " overlaps or leaves a gap (expected " +
                       std::to_string(expected) + ")",
                   ti.at);
        }
        expected = ti.offset + (ti.nbytes + align - 1) / align * align;
        out.data_size = ti.offset + ti.nbytes;
    }
    return out;
}

}  // namespace lmfast
