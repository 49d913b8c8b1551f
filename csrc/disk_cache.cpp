#include "disk_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "prefix_cache.h"  // common_prefix

namespace fs = std::filesystem;

namespace lmfast {

uint64_t hash_bytes(const void * data, size_t n, uint64_t h) {
    constexpr uint64_t kPrime = 0x100000001b3ull;
    const auto * p = static_cast<const unsigned char *>(data);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        h = (h ^ w) * kPrime;
    }
    uint64_t tail = n;  // the length, so that trailing zero bytes count
    for (size_t k = 0; i + k < n; ++k) tail ^= static_cast<uint64_t>(p[i + k]) << (8 * (k + 1));
    return (h ^ tail) * kPrime;
}

namespace {

constexpr char kMagic[8] = {'L', 'M', 'F', 'A', 'S', 'T', 'K', 'V'};
constexpr uint32_t kVersion = 1;
constexpr const char * kExt = ".lmkv";

struct FileHeader {
    char magic[8];
    uint32_t version;
    uint32_t identity_len;
    uint64_t n_tokens;
    uint64_t state_len;
    uint64_t checksum;  // hash_bytes over identity, tokens and state, in that order
};

struct FileCloser {
    void operator()(FILE * f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

std::string hex16(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

uint64_t content_hash(const std::string & identity, const std::vector<llama_token> & tokens,
                      const std::vector<uint8_t> & state) {
    uint64_t h = hash_bytes(identity.data(), identity.size());
    h = hash_bytes(tokens.data(), tokens.size() * sizeof(llama_token), h);
    return hash_bytes(state.data(), state.size(), h);
}

// A new file, created for this process only: O_EXCL|O_NOFOLLOW so that a name planted in a
// shared folder (a symlink to a file of the user's, a file of another user) is never written
// through, and 0600 since the state holds the conversation. A leftover of this name (a crashed
// process with the same pid, or a planted link) is unlinked -- the link itself, not its target --
// and the create tried once more.
File create_private(const std::string & path) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            FILE * f = ::fdopen(fd, "wb");
            if (!f) ::close(fd);
            return File(f);
        }
        if (errno != EEXIST || ::unlink(path.c_str()) != 0) break;
    }
    return File(nullptr);
}

// An existing cache file for reading: a regular file, not followed through a symlink. `bytes`
// gets its size as the open descriptor sees it (the lengths in its header are checked against it).
File open_cache_file(const std::string & path, uint64_t & bytes) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return File(nullptr);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return File(nullptr);
    }
    bytes = static_cast<uint64_t>(st.st_size);
    FILE * f = ::fdopen(fd, "rb");
    if (!f) ::close(fd);
    return File(f);
}

bool read_exact(FILE * f, void * out, size_t n) { return n == 0 || std::fread(out, 1, n, f) == n; }

bool is_cache_file(const fs::directory_entry & e) {
    std::error_code ec;
    return e.is_regular_file(ec) && e.path().extension() == kExt;
}

}  // namespace

DiskCache::DiskCache(const std::string & dir, const std::string & identity, uint64_t budget, Warn warn)
    : dir_(dir), identity_(identity), budget_(budget), warn_(std::move(warn)) {
    if (dir_.empty()) return;
    prefix_ = hex16(hash_bytes(identity_.data(), identity_.size())) + "-";
    std::error_code ec;
    // A folder lmfast creates is the user's alone (it will hold conversations' state).
    if (!fs::exists(dir_, ec) && fs::create_directories(dir_, ec)) {
        fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace, ec);
    }
    const std::string probe = (fs::path(dir_) / (".probe-" + std::to_string(::getpid()))).string();
    File f = create_private(probe);
    if (!f) {
        disable("cannot write to it");
        return;
    }
    f.reset();
    fs::remove(probe, ec);
    scan();
}

void DiskCache::disable(const std::string & why) {
    warn_("prompt cache folder " + dir_ + ": " + why + "; the disk tier is off for this model");
    dir_.clear();
    index_.clear();
}

void DiskCache::reject(const std::string & path, const std::string & why) {
    std::error_code ec;
    const uint64_t size = fs::file_size(path, ec);
    if (fs::remove(path, ec) && size <= folder_bytes_) folder_bytes_ -= size;
    warn_("prompt cache file " + path + " " + why + ": removed, not loaded");
}

void DiskCache::scan() {
    std::error_code ec;
    folder_bytes_ = 0;
    index_.clear();
    for (const auto & e : fs::directory_iterator(dir_, ec)) {
        if (!is_cache_file(e)) continue;
        const uint64_t size = e.file_size(ec);
        if (ec) continue;
        folder_bytes_ += size;
        const std::string path = e.path().string();
        if (e.path().filename().string().rfind(prefix_, 0) != 0) continue;  // another model's
        if (auto got = read_index(path, size)) index_.push_back(std::move(*got));
    }
}

// The header checks: magic, version, identity and lengths that add up to the file size.
std::optional<DiskCache::Indexed> DiskCache::read_index(const std::string & path, uint64_t file_bytes) {
    uint64_t opened_bytes = 0;
    File f = open_cache_file(path, opened_bytes);
    FileHeader h{};
    if (!f || opened_bytes != file_bytes || !read_exact(f.get(), &h, sizeof h) || std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 ||
        h.version != kVersion) {
        reject(path, "is not an lmfast prompt cache file of this version");
        return std::nullopt;
    }
    const uint64_t want = sizeof h + h.identity_len + h.n_tokens * sizeof(llama_token) + h.state_len;
    if (h.identity_len > (1u << 16) || h.n_tokens > (1ull << 31) || h.state_len > (1ull << 40) ||
        want != file_bytes) {
        reject(path, "is truncated or has a damaged header");
        return std::nullopt;
    }
    std::string identity(h.identity_len, '\0');
    Indexed e{path, std::vector<llama_token>(h.n_tokens), file_bytes};
    if (!read_exact(f.get(), identity.data(), identity.size()) || identity != identity_) {
        reject(path, "belongs to another model or KV cache layout");
        return std::nullopt;
    }
    if (!read_exact(f.get(), e.tokens.data(), e.tokens.size() * sizeof(llama_token)) || e.tokens.empty()) {
        reject(path, "is truncated");
        return std::nullopt;
    }
    return e;
}

const DiskCache::Indexed * DiskCache::best(const std::vector<llama_token> & prompt, size_t & n_common) const {
    n_common = 0;
    const Indexed * found = nullptr;
    for (const auto & e : index_) {
        const size_t n = common_prefix(e.tokens, prompt);
        if (n > n_common) {
            n_common = n;
            found = &e;
        }
    }
    return found;
}

std::optional<SpillCache::Entry> DiskCache::read(const Indexed * e) {
    const std::string path = e->path;
    const std::vector<llama_token> tokens = e->tokens;
    index_.erase(index_.begin() + (e - index_.data()));  // back in below when the file is good
    uint64_t file_bytes = 0;
    File f = open_cache_file(path, file_bytes);
    std::error_code ec;
    if (!f && !fs::exists(fs::symlink_status(path, ec))) return std::nullopt;  // evicted meanwhile (another process sharing the folder)
    FileHeader h{};
    std::string identity;
    SpillCache::Entry out;
    bool ok = f && read_exact(f.get(), &h, sizeof h) && h.n_tokens == tokens.size() && h.identity_len == identity_.size();
    // The file may have changed since it was indexed: its state length must fit the bytes the
    // file has before anything is allocated for it (a header claiming a terabyte gets nothing).
    const uint64_t fixed = sizeof h + static_cast<uint64_t>(h.identity_len) + tokens.size() * sizeof(llama_token);
    ok = ok && file_bytes >= fixed && h.state_len == file_bytes - fixed;
    if (ok) {
        identity.resize(h.identity_len);
        out.tokens.resize(h.n_tokens);
        out.state.resize(h.state_len);
        ok = read_exact(f.get(), identity.data(), identity.size()) &&
             read_exact(f.get(), out.tokens.data(), out.tokens.size() * sizeof(llama_token)) &&
             read_exact(f.get(), out.state.data(), out.state.size()) && std::fgetc(f.get()) == EOF;
    }
    if (!ok || identity != identity_ || out.tokens != tokens || content_hash(identity, out.tokens, out.state) != h.checksum) {
        f.reset();
        reject(path, "failed its checks (changed since it was indexed, or damaged)");
        return std::nullopt;
    }
    fs::last_write_time(path, fs::file_time_type::clock::now(), ec);
    index_.push_back(Indexed{path, tokens, static_cast<uint64_t>(sizeof h + h.identity_len) +
                                               tokens.size() * sizeof(llama_token) + h.state_len});
    return out;
}

std::string DiskCache::path_for(const std::vector<llama_token> & tokens) const {
    const uint64_t th = hash_bytes(tokens.data(), tokens.size() * sizeof(llama_token));
    return (fs::path(dir_) / (prefix_ + hex16(th) + kExt)).string();
}

// Removes the least recently used .lmkv files of the folder (any model's) until `need` more
// bytes fit the budget. The folder is listed again: other processes may share it.
void DiskCache::make_room(uint64_t need) {
    std::error_code ec;
    std::vector<std::pair<fs::file_time_type, fs::directory_entry>> files;
    folder_bytes_ = 0;
    for (const auto & e : fs::directory_iterator(dir_, ec)) {
        if (!is_cache_file(e)) continue;
        folder_bytes_ += e.file_size(ec);
        files.emplace_back(e.last_write_time(ec), e);
    }
    std::sort(files.begin(), files.end(), [](const auto & a, const auto & b) { return a.first < b.first; });
    for (const auto & [t, e] : files) {
        if (folder_bytes_ + need <= budget_) break;
        const uint64_t size = e.file_size(ec);
        if (!fs::remove(e.path(), ec)) continue;
        folder_bytes_ -= std::min(size, folder_bytes_);
        const std::string path = e.path().string();
        index_.erase(std::remove_if(index_.begin(), index_.end(), [&](const Indexed & x) { return x.path == path; }),
                     index_.end());
    }
}

bool DiskCache::put(const std::vector<llama_token> & tokens, const std::vector<uint8_t> & state) {
    if (!enabled() || tokens.empty()) return false;
    const std::string path = path_for(tokens);
    for (const auto & e : index_) {
        if (e.path == path && e.tokens == tokens) return true;
    }
    FileHeader h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = kVersion;
    h.identity_len = static_cast<uint32_t>(identity_.size());
    h.n_tokens = tokens.size();
    h.state_len = state.size();
    h.checksum = content_hash(identity_, tokens, state);
    const uint64_t bytes = sizeof h + identity_.size() + tokens.size() * sizeof(llama_token) + state.size();
    if (bytes > budget_) return false;
    make_room(bytes);
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    File f = create_private(tmp);
    bool ok = f && std::fwrite(&h, sizeof h, 1, f.get()) == 1 &&
              std::fwrite(identity_.data(), 1, identity_.size(), f.get()) == identity_.size() &&
              std::fwrite(tokens.data(), sizeof(llama_token), tokens.size(), f.get()) == tokens.size() &&
              std::fwrite(state.data(), 1, state.size(), f.get()) == state.size();
    ok = f && std::fclose(f.release()) == 0 && ok;
    std::error_code ec;
    if (!ok || (fs::rename(tmp, path, ec), ec)) {
        fs::remove(tmp, ec);
        disable("writing a cache file failed (read-only or full?)");
        return false;
    }
    index_.erase(std::remove_if(index_.begin(), index_.end(), [&](const Indexed & x) { return x.path == path; }),
                 index_.end());
    index_.push_back(Indexed{path, tokens, bytes});
    folder_bytes_ += bytes;
    return true;
}

}  // namespace lmfast
