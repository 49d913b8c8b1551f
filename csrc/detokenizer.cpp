#include "detokenizer.h"

#include <algorithm>

namespace lmfast {

namespace {

// Length of the UTF-8 sequence a lead byte announces; 0 for a byte that cannot lead.
int utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return c >= 0xC2 ? 2 : 0;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return c <= 0xF4 ? 4 : 0;
    return 0;
}

// Whether byte b may follow lead byte `lead` at position k (1..3) of its sequence. The second
// byte's range is narrower after four leads: E0 and F0 would otherwise allow overlong forms,
// ED the UTF-16 surrogates U+D800..DFFF, F4 code points above U+10FFFF.
bool continues(unsigned char lead, unsigned char b, size_t k) {
    if ((b & 0xC0) != 0x80) return false;
    if (k != 1) return true;
    switch (lead) {
        case 0xE0: return b >= 0xA0;
        case 0xED: return b <= 0x9F;
        case 0xF0: return b >= 0x90;
        case 0xF4: return b <= 0x8F;
        default: return true;
    }
}

const char kReplacement[] = "\xEF\xBF\xBD";

}  // namespace

std::string Utf8Stream::push(const std::string & bytes) {
    pending_ += bytes;
    std::string out;
    size_t i = 0;
    const size_t n = pending_.size();
    while (i < n) {
        const unsigned char c = static_cast<unsigned char>(pending_[i]);
        const int len = utf8_len(c);
        if (len == 0) {
            out += kReplacement;
            ++i;
            continue;
        }
        if (i + len > n) {
            // Incomplete: keep it if the bytes so far are valid continuations.
            bool ok = true;
            for (size_t j = i + 1; j < n; ++j) ok &= continues(c, static_cast<unsigned char>(pending_[j]), j - i);
            if (ok) break;
            out += kReplacement;
            ++i;
            continue;
        }
        bool ok = true;
        for (int j = 1; j < len; ++j) ok &= continues(c, static_cast<unsigned char>(pending_[i + j]), j);
        if (!ok) {
            out += kReplacement;
            ++i;
            continue;
        }
        out.append(pending_, i, len);
        i += len;
    }
    pending_.erase(0, i);
    return out;
}

std::string Utf8Stream::flush() {
    // Generation ended inside a character (e.g. at maxTokens): its first bytes mean
    // nothing on their own, so they are dropped rather than shown as U+FFFD.
    pending_.clear();
    return std::string();
}

StopMatcher::StopMatcher(std::vector<std::string> stops) {
    for (auto & s : stops) {
        if (!s.empty()) stops_.push_back(std::move(s));
    }
}

StopMatcher::Result StopMatcher::push(const std::string & text) {
    Result r;
    if (stops_.empty()) {
        r.emit = text;
        return r;
    }
    held_ += text;
    // The earliest complete match wins.
    size_t best = std::string::npos;
    for (const auto & s : stops_) {
        size_t pos = held_.find(s);
        if (pos < best) best = pos;
    }
    if (best != std::string::npos) {
        r.emit = held_.substr(0, best);
        r.stopped = true;
        held_.clear();
        return r;
    }
    // Hold back the longest tail that is a proper prefix of some stop string.
    size_t keep = 0;
    for (const auto & s : stops_) {
        const size_t max_k = std::min(s.size() - 1, held_.size());
        for (size_t k = max_k; k > keep; --k) {
            if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
                keep = k;
                break;
            }
        }
    }
    r.emit = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return r;
}

std::string StopMatcher::flush() {
    std::string out;
    out.swap(held_);
    return out;
}

std::string CallFilter::push(const std::string & text) {
    if (in_call_) return std::string();
    StopMatcher::Result r = markers_.push(text);
    in_call_ = r.stopped;
    return r.emit;
}

std::string CallFilter::flush() {
    return in_call_ ? std::string() : markers_.flush();
}

}  // namespace lmfast
