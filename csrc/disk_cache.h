// The disk tier of the KV cache (an lmfast extension, load key promptCacheDir). Conversations
// pushed out of the host tier (spill_cache.h) and prefixes saved on purpose (Engine::persist,
// LLM.prewarm) are written to files, so that a long system prompt or document survives a
// process restart: reading 23 MiB of SmolLM2 state for 1,000 tokens back takes tens of
// milliseconds against ~3 s to evaluate them again on 2 cores.
//
// One file per entry, named <identity hash>-<token hash>.lmkv, written to a temporary name and
// renamed (a reader never sees half a file; without fsync a crash may leave a short or zeroed
// file, which the checks below reject). A file holds a header (magic, checksum, lengths), the
// identity (the model file and KV layout, from instance.py), the token ids and the sequence
// state. Before use a file is checked: magic, identity, lengths against the file size, tokens
// against the index, and a checksum over all of it; a file that fails is removed with a
// warning, never loaded. The folder's byte budget counts every .lmkv file in it (several
// models may share a folder); the least recently used (file mtime, touched on use) go first.
// A folder that cannot be created or written turns the tier off with a warning. Files are
// created O_EXCL|O_NOFOLLOW with mode 0600 (a folder lmfast creates gets 0700), opened for
// reading without following symlinks, and a state length is checked against the file's size
// before anything is allocated for it.
// Owned and used by the engine thread only, after construction: no locking here.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "spill_cache.h"

namespace lmfast {

// 64-bit hash of bytes: FNV-1a over 8-byte words (a changed word always changes the result,
// since every step is a bijection of the running value), ~8x faster than bytewise FNV.
uint64_t hash_bytes(const void * data, size_t n, uint64_t h = 0xcbf29ce484222325ull);

class DiskCache {
public:
    using Warn = std::function<void(const std::string &)>;
    // dir empty: off. Scans dir for this identity's files (removing those that fail the header
    // checks) and for the bytes all .lmkv files use.
    DiskCache(const std::string & dir, const std::string & identity, uint64_t budget, Warn warn);

    bool enabled() const { return !dir_.empty(); }

    // Writes an entry unless a file already holds exactly these tokens; makes room first
    // (least recently used files). Returns whether a file holds the entry afterwards.
    bool put(const std::vector<llama_token> & tokens, const std::vector<uint8_t> & state);

    struct Indexed {
        std::string path;
        std::vector<llama_token> tokens;
        uint64_t bytes = 0;  // file size
    };
    // The indexed entry sharing the longest prefix with prompt (n_common set), or nullptr.
    const Indexed * best(const std::vector<llama_token> & prompt, size_t & n_common) const;
    // Reads and checks an entry's file; a file that fails is removed (and unindexed) with a
    // warning and nullopt is returned. A good file is touched (most recently used).
    std::optional<SpillCache::Entry> read(const Indexed * e);

    size_t size() const { return index_.size(); }
    uint64_t bytes() const { return folder_bytes_; }
    uint64_t budget() const { return budget_; }

private:
    void scan();
    std::optional<Indexed> read_index(const std::string & path, uint64_t file_bytes);
    void make_room(uint64_t need);
    void reject(const std::string & path, const std::string & why);
    void disable(const std::string & why);
    std::string path_for(const std::vector<llama_token> & tokens) const;

    std::string dir_;
    std::string identity_;
    std::string prefix_;  // file-name prefix of this identity: "<16 hex>-"
    uint64_t budget_;
    uint64_t folder_bytes_ = 0;  // all .lmkv files in dir_, this identity's or not
    std::vector<Indexed> index_;  // this identity's files
    Warn warn_;
};

}  // namespace lmfast
