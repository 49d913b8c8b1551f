// Model-free unit tests of the native core's bookkeeping: PrefixCache (which KV sequence a
// prompt reuses), SpillCache and DiskCache (the host-memory and disk tiers), Utf8Stream and StopMatcher (what text may
// be handed to Python). Built and run by tests/test_native_units.py with the system compiler;
// no test framework, no llama library (llama.h is read for its typedefs only).
//
//   unit_tests               runs every case except the known bugs; exit 0 when all pass
//   unit_tests --known-bugs  runs only the cases that show a known bug (they fail until fixed)
//
// Expected values are worked out from the contracts in the headers' comments.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "detokenizer.h"
#include "disk_cache.h"
#include "draft_length.h"
#include "prefix_cache.h"
#include "spill_cache.h"

using namespace lmfast;
using Tokens = std::vector<llama_token>;

// ---------------------------------------------------------------- a tiny harness

namespace {

struct Case {
    const char * name;
    void (*fn)();
    const char * known_bug;  // non-null: the case shows this bug and fails until it is fixed
};

std::vector<Case> & registry() {
    static std::vector<Case> cases;
    return cases;
}

struct Register {
    Register(const char * name, void (*fn)(), const char * bug) { registry().push_back({name, fn, bug}); }
};

int g_checks = 0;
int g_failed_checks = 0;

std::string show(const std::string & s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02X", c);
            out += buf;
        }
    }
    return out + "\"";
}
std::string show(const Tokens & t) {
    std::ostringstream o;
    o << "{";
    for (size_t i = 0; i < t.size(); ++i) o << (i ? "," : "") << t[i];
    o << "}";
    return o.str();
}
template <typename T>
std::string show(const T & v) {
    std::ostringstream o;
    o << v;
    return o.str();
}

void check(bool ok, const char * expr, const char * file, int line) {
    ++g_checks;
    if (ok) return;
    ++g_failed_checks;
    std::printf("  FAILED %s:%d: %s\n", file, line, expr);
}

template <typename A, typename B>
void check_eq(const A & a, const B & b, const char * ea, const char * eb, const char * file, int line) {
    ++g_checks;
    if (a == b) return;
    ++g_failed_checks;
    std::printf("  FAILED %s:%d: %s == %s\n    got      %s\n    expected %s\n", file, line, ea, eb, show(a).c_str(),
                show(b).c_str());
}

}  // namespace

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)
#define CHECK_EQ(actual, expected) check_eq((actual), (expected), #actual, #expected, __FILE__, __LINE__)
#define TEST_CASE(name)                                 \
    static void name();                                 \
    static Register name##_reg(#name, name, nullptr);   \
    static void name()
#define KNOWN_BUG(name, why)                            \
    static void name();                                 \
    static Register name##_reg(#name, name, why);       \
    static void name()

// ---------------------------------------------------------------- helpers

namespace {

// n consecutive token ids from `first`: distinct ranges never share a prefix.
Tokens run(llama_token first, size_t n) {
    Tokens t;
    for (size_t i = 0; i < n; ++i) t.push_back(first + static_cast<llama_token>(i));
    return t;
}

Tokens cat(Tokens a, const Tokens & b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

Tokens head(const Tokens & t, size_t n) { return Tokens(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(n)); }

// The load-time LoRA setting (no per-request scales): every case but the keyed ones runs under it.
const AdapterKey kBase{};

// The copy_pays callback: answers as told and records how it was asked.
struct CopyPays {
    bool answer = true;
    int calls = 0;
    llama_seq_id src = -1;
    size_t n_common = 0;
    bool operator()(llama_seq_id s, size_t n) {
        ++calls;
        src = s;
        n_common = n;
        return answer;
    }
};

// A request the test admits: acquire, then fill the sequence as the engine would (it keeps the
// first n_common tokens, or copies them, then evaluates the rest of the prompt).
PrefixCache::Match admit(PrefixCache & c, const Tokens & prompt, CopyPays & pays) {
    PrefixCache::Match m = c.acquire(prompt, kBase, pays);
    if (m.seq >= 0) c.tokens(m.seq) = prompt;
    return m;
}
PrefixCache::Match admit(PrefixCache & c, const Tokens & prompt) {
    CopyPays pays;
    return admit(c, prompt, pays);
}

void expect_match(const PrefixCache::Match & m, llama_seq_id seq, llama_seq_id copy_from, size_t n_common,
                  const char * file, int line) {
    check_eq(m.seq, seq, "m.seq", "seq", file, line);
    check_eq(m.copy_from, copy_from, "m.copy_from", "copy_from", file, line);
    check_eq(m.n_common, n_common, "m.n_common", "n_common", file, line);
}
#define EXPECT_MATCH(m, seq, copy_from, n_common) expect_match((m), (seq), (copy_from), (n_common), __FILE__, __LINE__)

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(const std::string & s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
        const unsigned char c = b(i);
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c < 0x80) {
            len = 1;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return false;
        }
        if (i + len > s.size()) return false;
        if (len > 1 && (b(i + 1) < lo || b(i + 1) > hi)) return false;
        for (size_t k = 2; k < len; ++k) {
            if ((b(i + k) & 0xC0) != 0x80) return false;
        }
        i += len;
    }
    return true;
}

const std::string kFFFD = "\xEF\xBF\xBD";

size_t count(const std::string & s, const std::string & what) {
    size_t n = 0;
    for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
    return n;
}

// Every way to cut s into up to three consecutive pieces (empty pieces included).
void for_each_split(const std::string & s, const std::function<void(const std::vector<std::string> &)> & f) {
    for (size_t i = 0; i <= s.size(); ++i) {
        for (size_t j = i; j <= s.size(); ++j) f({s.substr(0, i), s.substr(i, j - i), s.substr(j)});
    }
}

}  // namespace

// ---------------------------------------------------------------- common_prefix

TEST_CASE(common_prefix_lengths) {
    CHECK_EQ(common_prefix({1, 2, 3}, {1, 2, 4}), size_t(2));
    CHECK_EQ(common_prefix({1, 2, 3}, {1, 2, 3}), size_t(3));
    CHECK_EQ(common_prefix({1, 2}, {1, 2, 3}), size_t(2));
    CHECK_EQ(common_prefix({1, 2, 3}, {1, 2}), size_t(2));
    CHECK_EQ(common_prefix({5, 2, 3}, {1, 2, 3}), size_t(0));  // equal tails do not count
    CHECK_EQ(common_prefix({}, {1}), size_t(0));
    CHECK_EQ(common_prefix({}, {}), size_t(0));
}

// ---------------------------------------------------------------- PrefixCache: reuse

TEST_CASE(prefix_fresh_cache_gives_first_sequence) {
    PrefixCache c(3);
    CHECK_EQ(c.n_seq(), 3);
    CHECK_EQ(c.longest_cached(run(1, 10), kBase), size_t(0));
    CopyPays pays;
    EXPECT_MATCH(admit(c, run(1, 10), pays), 0, -1, 0);
    CHECK_EQ(pays.calls, 0);
    CHECK_EQ(c.longest_cached(run(1, 10), kBase), size_t(10));
    CHECK_EQ(c.longest_cached(run(1, 4), kBase), size_t(4));
}

TEST_CASE(prefix_conversation_continues_in_its_sequence) {
    // The next turn of a chat extends what its sequence holds: same sequence, all of it reused.
    PrefixCache c(2);
    const Tokens turn1 = run(100, 20);
    admit(c, turn1);
    c.tokens(0) = cat(turn1, run(500, 10));  // + the answer
    c.release(0);
    const Tokens turn2 = cat(c.tokens(0), run(700, 5));
    CopyPays pays;
    EXPECT_MATCH(c.acquire(turn2, kBase, pays), 0, -1, 30);
    CHECK_EQ(pays.calls, 0);
}

TEST_CASE(prefix_short_tail_is_cut_off) {
    // 15 tokens beyond the shared prefix (< kKeepTail): the request takes the sequence over.
    static_assert(PrefixCache::kKeepTail == 16, "the cases below are written for 16");
    PrefixCache c(2);
    const Tokens sys = run(100, 20);
    admit(c, cat(sys, run(500, 15)));
    c.release(0);
    CopyPays pays;
    EXPECT_MATCH(c.acquire(cat(sys, run(900, 4)), kBase, pays), 0, -1, 20);
    CHECK_EQ(pays.calls, 0);
}

TEST_CASE(prefix_long_tail_is_kept_and_copied) {
    // Exactly kKeepTail tokens beyond the shared prefix: kept; the request gets the spare
    // sequence 1 and, as copy_pays says yes, copies the 20 shared tokens from sequence 0.
    PrefixCache c(2);
    const Tokens sys = run(100, 20);
    const Tokens other = cat(sys, run(500, 16));
    admit(c, other);
    c.release(0);
    CopyPays pays;
    EXPECT_MATCH(c.acquire(cat(sys, run(900, 4)), kBase, pays), 1, 0, 20);
    CHECK_EQ(pays.calls, 1);
    CHECK_EQ(pays.src, 0);
    CHECK_EQ(pays.n_common, size_t(20));
    CHECK_EQ(c.tokens(0), other);  // the other conversation is still there
}

TEST_CASE(prefix_long_tail_copy_does_not_pay) {
    // copy_pays says no: a spare sequence still, but the shared tokens are evaluated again.
    PrefixCache c(2);
    const Tokens sys = run(100, 20);
    admit(c, cat(sys, run(500, 40)));
    c.release(0);
    CopyPays pays;
    pays.answer = false;
    EXPECT_MATCH(c.acquire(cat(sys, run(900, 4)), kBase, pays), 1, -1, 0);
    CHECK_EQ(pays.calls, 1);
    CHECK_EQ(pays.src, 0);
    CHECK_EQ(pays.n_common, size_t(20));
}

TEST_CASE(prefix_long_tail_without_spare_is_reused) {
    // One sequence only, idle: nothing to branch into, so its tail is cut and the prefix reused.
    PrefixCache c(1);
    const Tokens sys = run(100, 20);
    admit(c, cat(sys, run(500, 40)));
    c.release(0);
    CopyPays pays;
    EXPECT_MATCH(c.acquire(cat(sys, run(900, 4)), kBase, pays), 0, -1, 20);
    CHECK_EQ(pays.calls, 0);

    // Two sequences, the other one busy: the same.
    PrefixCache d(2);
    admit(d, cat(sys, run(500, 40)));  // seq 0
    admit(d, run(2000, 5));            // seq 1 (busy from now on)
    d.release(0);
    CopyPays pays2;
    EXPECT_MATCH(d.acquire(cat(sys, run(900, 4)), kBase, pays2), 0, -1, 20);
    CHECK_EQ(pays2.calls, 0);
}

TEST_CASE(prefix_long_tail_is_kept_only_when_that_loses_less) {
    // The only spare holds a conversation longer than the matched one's tail: branching would
    // lose more cached tokens than it keeps, so the request continues in place (no copy).
    PrefixCache c(2);
    const Tokens sys = run(100, 20);
    admit(c, cat(sys, run(500, 40)));  // seq 0: client A's question and answer
    admit(c, cat(sys, run(600, 40)));  // seq 1: client B's
    c.release(0);
    c.release(1);
    CopyPays pays;
    EXPECT_MATCH(c.acquire(cat(cat(sys, run(500, 8)), run(900, 4)), kBase, pays), 0, -1, 28);  // A's next question
    CHECK_EQ(pays.calls, 0);
    CHECK_EQ(c.tokens(1), cat(sys, run(600, 40)));  // B's stays for B
    CHECK(c.would_displace(cat(sys, run(700, 4)), kBase));  // a third client displaces one of them
}

TEST_CASE(prefix_long_tail_beats_a_shorter_spare) {
    // The matched conversation's tail is longer than what the spare holds: branch, lose the spare.
    PrefixCache c(2);
    const Tokens sys = run(100, 8);
    admit(c, cat(sys, run(500, 70)));  // seq 0: a long conversation sharing 8 tokens
    admit(c, cat(sys, run(600, 30)));  // seq 1: a short one
    c.release(1);
    c.release(0);
    CopyPays pays;
    EXPECT_MATCH(c.acquire(cat(sys, run(900, 4)), kBase, pays), 1, 0, 8);
    CHECK_EQ(c.tokens(0), cat(sys, run(500, 70)));
}

TEST_CASE(prefix_busy_match_is_only_a_copy_source) {
    // Two chats with one system prompt at once: the second copies from the busy first one,
    // even though the busy sequence holds no tail at all.
    PrefixCache c(3);
    const Tokens sys = run(100, 20);
    EXPECT_MATCH(admit(c, cat(sys, run(500, 3))), 0, -1, 0);
    CopyPays pays;
    // Spare: sequence 1 (next to the busy 0) over the equally empty sequence 2.
    EXPECT_MATCH(c.acquire(cat(sys, run(900, 3)), kBase, pays), 1, 0, 20);
    CHECK_EQ(pays.calls, 1);
    CHECK_EQ(pays.src, 0);
    CHECK_EQ(pays.n_common, size_t(20));
}

TEST_CASE(prefix_busy_match_copy_does_not_pay) {
    PrefixCache c(2);
    const Tokens sys = run(100, 20);
    admit(c, sys);
    CopyPays pays;
    pays.answer = false;
    EXPECT_MATCH(c.acquire(cat(sys, run(900, 3)), kBase, pays), 1, -1, 0);
    CHECK_EQ(pays.calls, 1);
}

TEST_CASE(prefix_busy_match_without_spare_gets_nothing) {
    PrefixCache c(1);
    const Tokens sys = run(100, 20);
    admit(c, sys);
    CopyPays pays;
    EXPECT_MATCH(c.acquire(cat(sys, run(900, 3)), kBase, pays), -1, -1, 0);
    CHECK_EQ(pays.calls, 0);
    // Released, the same prompt gets the sequence and its prefix.
    c.release(0);
    EXPECT_MATCH(c.acquire(cat(sys, run(900, 3)), kBase, pays), 0, -1, 20);
}

TEST_CASE(prefix_all_busy_no_match_gets_nothing) {
    PrefixCache c(2);
    admit(c, run(100, 5));
    admit(c, run(200, 5));
    CopyPays pays;
    EXPECT_MATCH(c.acquire(run(300, 5), kBase, pays), -1, -1, 0);
    CHECK_EQ(pays.calls, 0);
}

TEST_CASE(prefix_longer_busy_match_beats_shorter_idle_one) {
    // Sequence 0 (busy) shares 20 tokens, sequence 1 (idle) 10: the request copies the 20 from
    // sequence 0 into a spare; sequence 1 is the spare (next to the busy one), not sequence 2.
    PrefixCache c(3);
    const Tokens p = run(100, 20);
    admit(c, p);                                    // seq 0, busy
    admit(c, cat(head(p, 10), run(600, 30)));       // seq 1 (shares 10 with p; copy_pays true)
    c.release(1);
    CopyPays pays;
    const PrefixCache::Match m = c.acquire(cat(p, run(900, 2)), kBase, pays);
    EXPECT_MATCH(m, 1, 0, 20);
    CHECK_EQ(pays.src, 0);
}

// ---------------------------------------------------------------- PrefixCache: ties

TEST_CASE(prefix_tie_newest_idle_wins_then_idle_beats_busy) {
    PrefixCache c(3);
    const Tokens p = run(100, 20);
    admit(c, p);  // seq 0, busy
    CopyPays pays;
    EXPECT_MATCH(admit(c, p, pays), 1, 0, 20);  // branch from the busy seq 0 into seq 1
    c.release(0);
    c.release(1);  // both idle and both hold p; sequence 1 released last: the newest
    EXPECT_MATCH(admit(c, cat(p, run(900, 1))), 1, -1, 20);
    // Now sequence 1 (busy) is newer than sequence 0 (idle); both share 20 tokens with the
    // prompt: the idle one wins, and as it holds no tail it is simply reused.
    CopyPays pays2;
    EXPECT_MATCH(c.acquire(cat(p, run(950, 1)), kBase, pays2), 0, -1, 20);
    CHECK_EQ(pays2.calls, 0);
}

TEST_CASE(prefix_tie_between_busy_prefers_newest) {
    PrefixCache c(4);
    const Tokens p = run(100, 20);
    admit(c, cat(p, run(300, 2)));  // seq 0, busy
    CopyPays pays;
    EXPECT_MATCH(admit(c, cat(p, run(400, 2)), pays), 1, 0, 20);  // seq 1, busy, newer
    CopyPays pays2;
    EXPECT_MATCH(c.acquire(cat(p, run(500, 2)), kBase, pays2), 2, 1, 20);
    CHECK_EQ(pays2.src, 1);
}

// ---------------------------------------------------------------- PrefixCache: spare choice

TEST_CASE(prefix_spare_next_to_busy_beats_empty_and_recent) {
    // Sequence 1 holds a conversation and was used last, sequences 2-4 are empty, sequence 0 is
    // busy: a new conversation goes to sequence 1 (consecutive ids decode in one pass).
    PrefixCache c(5);
    EXPECT_MATCH(admit(c, run(100, 5)), 0, -1, 0);
    EXPECT_MATCH(admit(c, run(200, 5)), 1, -1, 0);  // next to the busy 0, not the first empty
    c.release(1);
    EXPECT_MATCH(admit(c, run(300, 5)), 1, -1, 0);
}

TEST_CASE(prefix_spare_next_to_busy_on_the_right) {
    PrefixCache c(4);
    for (llama_token i = 0; i < 4; ++i) admit(c, run(100 * (i + 1), 5));  // seqs 0..3, all busy
    c.tokens(0).clear();
    c.tokens(1).clear();
    c.release(0);
    c.release(1);
    c.release(2);  // holds tokens, used last
    // 0 and 1 are empty and older, but 2 sits next to the busy 3.
    EXPECT_MATCH(admit(c, run(900, 5)), 2, -1, 0);
}

TEST_CASE(prefix_spare_among_adjacent_empty_then_lru) {
    PrefixCache c(3);
    for (llama_token i = 0; i < 3; ++i) admit(c, run(100 * (i + 1), 5));  // seqs 0..2
    c.tokens(2).clear();
    c.release(0);  // holds tokens, older
    c.release(2);  // empty, newer
    // Both are next to the busy 1: the empty one wins over the least recently used.
    EXPECT_MATCH(admit(c, run(900, 5)), 2, -1, 0);
    c.release(2);  // now it holds tokens and is newer than 0
    EXPECT_MATCH(admit(c, run(950, 5)), 0, -1, 0);  // both adjacent, both full: the LRU one
}

TEST_CASE(prefix_spare_empty_beats_lru_when_nothing_busy) {
    PrefixCache c(3);
    for (llama_token i = 0; i < 3; ++i) admit(c, run(100 * (i + 1), 5));
    c.tokens(2).clear();
    c.release(0);
    c.release(1);
    c.release(2);  // empty and the most recently used
    EXPECT_MATCH(admit(c, run(900, 5)), 2, -1, 0);
}

TEST_CASE(prefix_spare_lru_when_nothing_busy_or_empty) {
    PrefixCache c(3);
    for (llama_token i = 0; i < 3; ++i) admit(c, run(100 * (i + 1), 5));
    c.release(1);
    c.release(2);
    c.release(0);  // order of use: 1 (least recent), 2, 0
    EXPECT_MATCH(admit(c, run(900, 5)), 1, -1, 0);
    // Sequence 1 is busy now; 0 and 2 are both next to it and both full: 2 is older.
    EXPECT_MATCH(admit(c, run(950, 5)), 2, -1, 0);
}

TEST_CASE(prefix_branch_source_counts_as_used) {
    // Branching from a sequence marks it as used, so it is not the next one evicted.
    PrefixCache c(3);
    const Tokens a = run(100, 40);
    admit(c, a);  // seq 0
    c.release(0);
    EXPECT_MATCH(admit(c, run(1000, 5)), 1, -1, 0);  // seq 1 (empty beats LRU)
    c.release(1);                                       // seq 1 now newer than seq 0
    CopyPays pays;
    EXPECT_MATCH(admit(c, cat(head(a, 20), run(2000, 3)), pays), 2, 0, 20);  // branch off seq 0
    c.release(2);
    // Least recently used before the branch: 0; after it: 1.
    EXPECT_MATCH(admit(c, run(3000, 5)), 1, -1, 0);
}

// ---------------------------------------------------------------- PrefixCache: exactness

TEST_CASE(prefix_limit_exact_caps_matches_until_release) {
    PrefixCache c(3);
    const Tokens p = run(100, 40);
    admit(c, p);  // seq 0, busy
    c.limit_exact(0, 8);  // e.g. after a context shift: cells from 8 on are not reusable
    CHECK_EQ(c.longest_cached(p, kBase), size_t(8));
    CopyPays pays;
    EXPECT_MATCH(admit(c, cat(head(p, 30), run(900, 2)), pays), 1, 0, 8);
    CHECK_EQ(pays.n_common, size_t(8));
    c.release(1);
    c.release(0);  // the engine cuts the inexact cells; the limit is lifted
    CHECK_EQ(c.longest_cached(p, kBase), size_t(40));
}

TEST_CASE(prefix_limit_exact_zero_is_no_match) {
    PrefixCache c(2);
    const Tokens p = run(100, 40);
    admit(c, p);
    c.limit_exact(0, 0);
    CHECK_EQ(c.longest_cached(p, kBase), size_t(0));
    CopyPays pays;
    EXPECT_MATCH(c.acquire(p, kBase, pays), 1, -1, 0);
    CHECK_EQ(pays.calls, 0);
}

TEST_CASE(prefix_longest_cached_counts_busy_and_idle) {
    PrefixCache c(3);
    const Tokens p = run(100, 30);
    admit(c, cat(head(p, 7), run(500, 5)));  // seq 0, busy: shares 7
    admit(c, cat(head(p, 12), run(600, 5)));  // seq 1: shares 12 (copied 7 from 0)
    c.release(1);
    CHECK_EQ(c.longest_cached(p, kBase), size_t(12));
    CHECK_EQ(c.longest_cached(head(p, 9), kBase), size_t(9));
    CHECK_EQ(c.longest_cached(run(5000, 3), kBase), size_t(0));
    CHECK_EQ(c.longest_cached({}, kBase), size_t(0));
}

TEST_CASE(prefix_is_shared_only_under_the_same_adapter_setting) {
    // KV computed under one LoRA setting is never reused under another (issue 33).
    PrefixCache c(2);
    const AdapterKey half{0.5f};
    const Tokens p = run(100, 20);
    PrefixCache::Match m = c.acquire(p, kBase, CopyPays{});
    c.tokens(m.seq) = p;
    c.release(m.seq);
    CHECK_EQ(c.longest_cached(p, kBase), size_t(20));
    CHECK_EQ(c.longest_cached(p, half), size_t(0));
    CopyPays pays;
    PrefixCache::Match other = c.acquire(p, half, pays);
    CHECK_EQ(other.n_common, size_t(0));
    CHECK_EQ(pays.calls, 0);  // nothing offered to copy across settings
}

// ---------------------------------------------------------------- SpillCache

namespace {
std::vector<uint8_t> bytes_of(size_t n, uint8_t fill = 0xAB) { return std::vector<uint8_t>(n, fill); }
size_t best_n(SpillCache & s, const Tokens & prompt) {
    size_t n = 12345;
    s.best(prompt, kBase, n);
    return n;
}
// What the host tier pushed out at the last put() (to the disk tier, in the engine).
std::vector<SpillCache::Entry> g_pushed;
// put() as the engine calls it; true when the entry was kept (not itself pushed out).
bool put(SpillCache & s, Tokens t, std::vector<uint8_t> state) {
    g_pushed.clear();
    const Tokens asked = t;
    s.put(SpillCache::Entry{std::move(t), std::move(state)}, g_pushed);
    if (asked.empty()) return false;
    for (const auto & e : g_pushed) {
        if (e.tokens == asked) return false;
    }
    return true;
}
bool pushed(const Tokens & t) {
    for (const auto & e : g_pushed) {
        if (e.tokens == t) return true;
    }
    return false;
}
bool holds(SpillCache & s, const Tokens & t) {
    size_t n = 0;
    SpillCache::Iter it = s.best(t, kBase, n);
    return it != s.end() && it->tokens == t;
}
}  // namespace

TEST_CASE(spill_put_counts_bytes) {
    SpillCache s(1000);
    CHECK_EQ(s.budget(), size_t(1000));
    CHECK(put(s, run(100, 10), bytes_of(100)));
    CHECK(put(s, run(200, 10), bytes_of(250)));
    CHECK_EQ(s.size(), size_t(2));
    CHECK_EQ(s.bytes(), size_t(350));
}

TEST_CASE(spill_refuses_empty_tokens_and_oversized_entries) {
    SpillCache s(300);
    CHECK(put(s, run(100, 10), bytes_of(100)));
    CHECK(!put(s, {}, bytes_of(10)));
    CHECK(!put(s, run(200, 10), bytes_of(301)));  // alone larger than the budget: pushed out itself
    CHECK(pushed(run(200, 10)) && g_pushed.size() == 1);
    CHECK_EQ(s.size(), size_t(1));                // nothing kept, nothing evicted
    CHECK_EQ(s.bytes(), size_t(100));
    CHECK(holds(s, run(100, 10)));
    // Exactly the budget fits, and pushes the rest out.
    CHECK(put(s, run(300, 10), bytes_of(300)));
    CHECK_EQ(s.size(), size_t(1));
    CHECK_EQ(s.bytes(), size_t(300));
    CHECK(holds(s, run(300, 10)));
}

TEST_CASE(spill_put_supersedes_prefixes_of_itself) {
    SpillCache s(10000);
    const Tokens a = run(100, 10);
    CHECK(put(s, a, bytes_of(100)));
    CHECK(put(s, run(5000, 4), bytes_of(40)));                   // unrelated: stays
    CHECK(put(s, cat(head(a, 6), run(700, 6)), bytes_of(120)));  // a branch of a, not an extension: both stay
    CHECK_EQ(s.size(), size_t(3));
    CHECK(put(s, cat(a, run(900, 10)), bytes_of(200)));          // extends a: a goes
    CHECK(g_pushed.empty());  // dropped, not pushed out: the new entry serves what it served
    CHECK_EQ(s.size(), size_t(3));
    CHECK_EQ(s.bytes(), size_t(40 + 120 + 200));
    CHECK(!holds(s, a));
    CHECK(holds(s, cat(a, run(900, 10))));
    // The same tokens again replace the entry.
    CHECK(put(s, cat(a, run(900, 10)), bytes_of(210)));
    CHECK_EQ(s.size(), size_t(3));
    CHECK_EQ(s.bytes(), size_t(40 + 120 + 210));
    // A prefix of an entry does not supersede it.
    CHECK(put(s, head(a, 5), bytes_of(50)));
    CHECK_EQ(s.size(), size_t(4));
    CHECK(holds(s, cat(a, run(900, 10))));
}

TEST_CASE(spill_evicts_least_recently_used_within_budget) {
    SpillCache s(300);
    const Tokens x = run(100, 5), y = run(200, 5), z = run(300, 5), w = run(400, 5), v = run(500, 5);
    CHECK(put(s, x, bytes_of(100)));
    CHECK(put(s, y, bytes_of(100)));
    CHECK(put(s, z, bytes_of(100)));
    CHECK_EQ(s.bytes(), size_t(300));
    CHECK(put(s, w, bytes_of(100)));  // x, the oldest, goes to the next tier
    CHECK(pushed(x) && g_pushed.size() == 1);
    CHECK_EQ(s.size(), size_t(3));
    CHECK_EQ(s.bytes(), size_t(300));
    CHECK(!holds(s, x));
    CHECK(holds(s, y) && holds(s, z) && holds(s, w));
    CHECK(put(s, v, bytes_of(150)));  // y and z go (300 -> 100 <= 150 left), w stays
    CHECK(pushed(y) && pushed(z) && g_pushed.size() == 2);
    CHECK_EQ(s.size(), size_t(2));
    CHECK_EQ(s.bytes(), size_t(250));
    CHECK(!holds(s, y) && !holds(s, z));
    CHECK(holds(s, w) && holds(s, v));
}

TEST_CASE(spill_supersede_frees_room_before_evicting) {
    // The superseded entry's bytes count as free: the unrelated older entry survives.
    SpillCache s(300);
    const Tokens x = run(100, 5), a = run(200, 10);
    CHECK(put(s, x, bytes_of(100)));
    CHECK(put(s, a, bytes_of(150)));
    CHECK(put(s, cat(a, run(900, 5)), bytes_of(200)));
    CHECK_EQ(s.size(), size_t(2));
    CHECK_EQ(s.bytes(), size_t(300));
    CHECK(holds(s, x));
}

TEST_CASE(spill_best_picks_longest_common_prefix) {
    SpillCache s(10000);
    const Tokens a = run(1, 10);                   // 1..10
    const Tokens b = cat(run(1, 5), run(50, 6));   // 1..5, 50..55
    const Tokens c = run(90, 8);
    CHECK(put(s, a, bytes_of(10, 1)));
    CHECK(put(s, b, bytes_of(10, 2)));
    CHECK(put(s, c, bytes_of(10, 3)));
    size_t n = 0;
    SpillCache::Iter it = s.best(cat(run(1, 8), {99}), kBase, n);
    CHECK(it != s.end() && it->tokens == a);
    CHECK_EQ(n, size_t(8));
    it = s.best(cat(run(1, 5), {50, 51}), kBase, n);
    CHECK(it != s.end() && it->tokens == b);
    CHECK_EQ(n, size_t(7));
    it = s.best(cat(c, run(1000, 20)), kBase, n);  // the prompt extends the entry
    CHECK(it != s.end() && it->tokens == c);
    CHECK_EQ(n, size_t(8));
    CHECK_EQ(best_n(s, run(1, 3)), size_t(3));  // shared by a and b alike
    CHECK(s.best({777, 1, 2}, kBase, n) == s.end());   // shares no first token
    CHECK_EQ(n, size_t(0));
    CHECK(s.best({}, kBase, n) == s.end());
    CHECK_EQ(n, size_t(0));
}

TEST_CASE(spill_best_matches_only_its_adapter_setting) {
    SpillCache s(10000);
    const Tokens a = run(1, 10);
    std::vector<SpillCache::Entry> pushed;
    SpillCache::Entry e{a, bytes_of(10, 1)};
    e.key = AdapterKey{0.5f};
    s.put(std::move(e), pushed);
    size_t n = 0;
    CHECK(s.best(a, kBase, n) == s.end());
    CHECK(s.best(a, AdapterKey{0.5f}, n) != s.end());
    CHECK_EQ(n, a.size());
}

TEST_CASE(spill_take_removes_the_entry) {
    SpillCache s(10000);
    const Tokens a = run(1, 10), b = run(100, 10);
    CHECK(put(s, a, bytes_of(100, 7)));
    CHECK(put(s, b, bytes_of(60, 9)));
    size_t n = 0;
    SpillCache::Iter it = s.best(a, kBase, n);
    CHECK(it != s.end());
    const SpillCache::Entry e = s.take(it);
    CHECK_EQ(e.tokens, a);
    CHECK(e.state == bytes_of(100, 7));
    CHECK_EQ(s.size(), size_t(1));
    CHECK_EQ(s.bytes(), size_t(60));
    CHECK(s.best(a, kBase, n) == s.end());
    CHECK(holds(s, b));
}

// ---------------------------------------------------------------- DiskCache

namespace {
namespace fs = std::filesystem;

// A fresh folder under the system's temporary folder, removed at the end of the case.
struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "lmfast-unit-XXXXXX").string();
        path = ::mkdtemp(tmpl.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

struct Warnings {
    std::vector<std::string> got;
    DiskCache::Warn sink() {
        return [this](const std::string & m) { got.push_back(m); };
    }
    bool any(const char * part) const {
        for (const auto & m : got) {
            if (m.find(part) != std::string::npos) return true;
        }
        return false;
    }
};

std::vector<fs::path> cache_files(const fs::path & dir) {
    std::vector<fs::path> out;
    for (const auto & e : fs::directory_iterator(dir)) {
        if (e.path().extension() == ".lmkv") out.push_back(e.path());
    }
    return out;
}

std::vector<uint8_t> state_of(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
    return v;
}
}  // namespace

TEST_CASE(hash_bytes_sees_every_single_bit_flip) {
    std::vector<uint8_t> buf = state_of(37, 3);  // not a multiple of 8: the tail counts too
    const uint64_t h = hash_bytes(buf.data(), buf.size());
    int unchanged = 0;
    for (size_t i = 0; i < buf.size() * 8; ++i) {
        buf[i / 8] ^= static_cast<uint8_t>(1u << (i % 8));
        unchanged += hash_bytes(buf.data(), buf.size()) == h;
        buf[i / 8] ^= static_cast<uint8_t>(1u << (i % 8));
    }
    CHECK_EQ(unchanged, 0);
    buf.push_back(0);  // a trailing zero byte changes the length, and so the hash
    CHECK(hash_bytes(buf.data(), buf.size()) != h);
}

TEST_CASE(disk_put_then_read_back) {
    TempDir dir;
    Warnings w;
    DiskCache d(dir.path.string(), "model A", 1 << 20, w.sink());
    CHECK(d.enabled());
    const Tokens a = run(1, 20), b = run(100, 30);
    CHECK(d.put(a, state_of(500, 1)));
    CHECK(d.put(b, state_of(700, 2)));
    CHECK(d.put(a, state_of(500, 1)));  // already there: not written again
    CHECK_EQ(d.size(), size_t(2));
    CHECK_EQ(cache_files(dir.path).size(), size_t(2));
    size_t n = 0;
    const DiskCache::Indexed * e = d.best(cat(run(1, 12), {999}), n);
    CHECK(e != nullptr && e->tokens == a);
    CHECK_EQ(n, size_t(12));
    std::optional<SpillCache::Entry> got = d.read(e);
    CHECK(got.has_value() && got->tokens == a && got->state == state_of(500, 1));
    CHECK_EQ(d.size(), size_t(2));  // a file that is read stays
    CHECK(w.got.empty());
}

TEST_CASE(disk_files_survive_and_are_keyed_by_identity) {
    TempDir dir;
    Warnings w;
    const Tokens a = run(1, 20);
    { DiskCache(dir.path.string(), "model A", 1 << 20, w.sink()).put(a, state_of(500, 1)); }
    DiskCache again(dir.path.string(), "model A", 1 << 20, w.sink());
    CHECK_EQ(again.size(), size_t(1));
    size_t n = 0;
    CHECK(again.best(a, n) != nullptr && n == a.size());
    DiskCache other(dir.path.string(), "model B", 1 << 20, w.sink());
    CHECK_EQ(other.size(), size_t(0));      // another model's file is not offered ...
    CHECK(other.bytes() > 500);             // ... but counts against the folder's budget
    CHECK_EQ(cache_files(dir.path).size(), size_t(1));  // ... and is left alone
    CHECK(w.got.empty());
}

TEST_CASE(disk_damaged_file_is_removed_not_loaded) {
    TempDir dir;
    Warnings w;
    const Tokens a = run(1, 20);
    { DiskCache(dir.path.string(), "model A", 1 << 20, w.sink()).put(a, state_of(500, 1)); }
    const fs::path f = cache_files(dir.path).at(0);
    {
        std::vector<char> bytes(fs::file_size(f));
        std::FILE * in = std::fopen(f.c_str(), "rb");
        CHECK(std::fread(bytes.data(), 1, bytes.size(), in) == bytes.size());
        std::fclose(in);
        bytes[bytes.size() - 100] ^= 0x04;  // one bit of the state
        std::FILE * out = std::fopen(f.c_str(), "wb");
        std::fwrite(bytes.data(), 1, bytes.size(), out);
        std::fclose(out);
    }
    DiskCache d(dir.path.string(), "model A", 1 << 20, w.sink());
    CHECK_EQ(d.size(), size_t(1));  // the header is intact: indexed ...
    size_t n = 0;
    CHECK(!d.read(d.best(a, n)).has_value());  // ... but the checksum fails at use
    CHECK(w.any("failed its checks"));
    CHECK(!fs::exists(f));
    CHECK_EQ(d.size(), size_t(0));
}

TEST_CASE(disk_file_removed_by_another_process_is_dropped_quietly) {
    TempDir dir;
    Warnings w;
    const Tokens a = run(1, 20);
    DiskCache d(dir.path.string(), "model A", 1 << 20, w.sink());
    CHECK(d.put(a, state_of(500, 1)));
    fs::remove(cache_files(dir.path).at(0));  // evicted by another process sharing the folder
    size_t n = 0;
    CHECK(!d.read(d.best(a, n)).has_value());
    CHECK_EQ(d.size(), size_t(0));
    CHECK(w.got.empty());  // nothing was wrong with the file: no warning
}

TEST_CASE(disk_truncated_file_is_removed_at_scan) {
    TempDir dir;
    Warnings w;
    { DiskCache(dir.path.string(), "model A", 1 << 20, w.sink()).put(run(1, 20), state_of(500, 1)); }
    const fs::path f = cache_files(dir.path).at(0);
    fs::resize_file(f, fs::file_size(f) - 1);
    DiskCache d(dir.path.string(), "model A", 1 << 20, w.sink());
    CHECK_EQ(d.size(), size_t(0));
    CHECK(w.any("truncated"));
    CHECK(!fs::exists(f));
}

TEST_CASE(disk_files_are_private_and_never_written_through_a_symlink) {
    TempDir dir;
    Warnings w;
    const Tokens a = run(1, 20);
    const fs::path folder = dir.path / "made-by-lmfast";
    { DiskCache(folder.string(), "model A", 1 << 20, w.sink()).put(a, state_of(500, 1)); }
    CHECK((fs::status(folder).permissions() & fs::perms::all) == fs::perms::owner_all);  // 0700
    const fs::path f = cache_files(folder).at(0);
    CHECK((fs::status(f).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
    // Links planted at the file's name and at this process's temporary name, pointing at a
    // file of the user's: the put writes neither through them.
    fs::remove(f);
    const fs::path victim = dir.path / "victim.txt";
    { std::FILE * v = std::fopen(victim.c_str(), "wb"); std::fputs("precious", v); std::fclose(v); }
    fs::create_symlink(victim, f);
    fs::create_symlink(victim, f.string() + ".tmp-" + std::to_string(::getpid()));
    DiskCache d(folder.string(), "model A", 1 << 20, w.sink());  // the planted link is not indexed
    CHECK_EQ(d.size(), size_t(0));
    CHECK(d.put(a, state_of(500, 1)));
    CHECK_EQ(fs::file_size(victim), size_t(8));
    CHECK(fs::is_regular_file(fs::symlink_status(f)));
    CHECK((fs::status(f).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
}

TEST_CASE(disk_state_length_beyond_the_file_is_refused_before_allocating) {
    TempDir dir;
    Warnings w;
    const Tokens a = run(1, 20);
    DiskCache d(dir.path.string(), "model A", 1 << 20, w.sink());
    CHECK(d.put(a, state_of(500, 1)));
    const fs::path f = cache_files(dir.path).at(0);
    {
        // The header's state_len (offset 24) claims a terabyte; the file keeps its size.
        std::FILE * io = std::fopen(f.c_str(), "r+b");
        const uint64_t huge = 1ull << 40;
        std::fseek(io, 24, SEEK_SET);
        std::fwrite(&huge, sizeof huge, 1, io);
        std::fclose(io);
    }
    size_t n = 0;
    CHECK(!d.read(d.best(a, n)).has_value());  // no allocation of 1 TiB (that would throw bad_alloc)
    CHECK(w.any("failed its checks"));
    CHECK(!fs::exists(f));
}

TEST_CASE(disk_budget_removes_least_recently_used) {
    TempDir dir;
    Warnings w;
    const Tokens a = run(1, 20), b = run(100, 20), c = run(200, 20);
    // Each file: a 40-byte header, the identity, 80 bytes of tokens and 1,000 of state.
    DiskCache d(dir.path.string(), "model A", 2400, w.sink());
    CHECK(d.put(a, state_of(1000, 1)));
    CHECK(d.put(b, state_of(1000, 2)));
    CHECK(d.put(c, state_of(1000, 3)));  // a, the oldest, goes
    CHECK_EQ(d.size(), size_t(2));
    CHECK_EQ(cache_files(dir.path).size(), size_t(2));
    size_t n = 0;
    CHECK(d.best(a, n) == nullptr || n < a.size());
    CHECK(d.bytes() <= d.budget());
    CHECK(!d.put(run(300, 5), state_of(5000, 4)));  // alone larger than the budget
    CHECK(w.got.empty());
}

TEST_CASE(disk_unwritable_folder_turns_the_tier_off) {
    TempDir dir;
    Warnings w;
    const fs::path file = dir.path / "a-file";
    std::fclose(std::fopen(file.c_str(), "wb"));
    DiskCache d((file / "cache").string(), "model A", 1 << 20, w.sink());
    CHECK(!d.enabled());
    CHECK(w.any("disk tier is off"));
    CHECK(!d.put(run(1, 20), state_of(100, 1)));
    size_t n = 0;
    CHECK(d.best(run(1, 20), n) == nullptr);
}

// ---------------------------------------------------------------- Utf8Stream

TEST_CASE(utf8_ascii_passes_through) {
    Utf8Stream u;
    CHECK_EQ(u.push("Hello, "), std::string("Hello, "));
    CHECK_EQ(u.push("world"), std::string("world"));
    CHECK_EQ(u.push(""), std::string(""));
    CHECK_EQ(u.flush(), std::string(""));
}

TEST_CASE(utf8_characters_split_across_tokens) {
    Utf8Stream u;
    CHECK_EQ(u.push("a\xC3"), std::string("a"));  // é = C3 A9
    CHECK_EQ(u.push("\xA9"), std::string("\xC3\xA9"));
    CHECK_EQ(u.push("\xE2"), std::string(""));  // € = E2 82 AC, one byte per token
    CHECK_EQ(u.push("\x82"), std::string(""));
    CHECK_EQ(u.push("\xAC!"), std::string("\xE2\x82\xAC!"));
    CHECK_EQ(u.push("\xF0\x9F"), std::string(""));  // 😀 = F0 9F 98 80
    CHECK_EQ(u.push("\x98"), std::string(""));
    CHECK_EQ(u.push("\x80\xF0\x9F\x98"), std::string("\xF0\x9F\x98\x80"));  // the next one starts
    CHECK_EQ(u.push("\x81"), std::string("\xF0\x9F\x98\x81"));
}

TEST_CASE(utf8_any_split_reassembles) {
    const std::string text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z";  // aé€😀z
    int splits = 0;
    for_each_split(text, [&](const std::vector<std::string> & parts) {
        Utf8Stream u;
        std::string out;
        for (const auto & p : parts) {
            const std::string piece = u.push(p);
            CHECK(valid_utf8(piece));  // never half a character
            out += piece;
        }
        out += u.flush();
        CHECK_EQ(out, text);
        ++splits;
    });
    CHECK(splits > 50);
}

TEST_CASE(utf8_invalid_bytes_become_replacement) {
    Utf8Stream u;
    CHECK_EQ(u.push("a\x80" "b"), "a" + kFFFD + "b");  // lone continuation byte
    CHECK_EQ(u.push("\xFF"), kFFFD);                     // never valid
    CHECK_EQ(u.push("\xC0\xAF"), kFFFD + kFFFD);         // overlong '/': C0 cannot lead
    CHECK_EQ(u.push("\xF5\x80\x80\x80"), kFFFD + kFFFD + kFFFD + kFFFD);  // above U+10FFFF
    CHECK_EQ(u.push("\xC3" "A"), kFFFD + "A");          // lead byte, then no continuation
    CHECK_EQ(u.push("x"), std::string("x"));             // nothing left pending
}

TEST_CASE(utf8_pending_lead_broken_by_next_token) {
    Utf8Stream u;
    CHECK_EQ(u.push("\xC3"), std::string(""));
    CHECK_EQ(u.push("A"), kFFFD + "A");
    // A 3-byte character cut after two bytes: replaced (how many U+FFFD is not specified),
    // and the following character survives.
    CHECK_EQ(u.push("\xE2\x82"), std::string(""));
    const std::string out = u.push("\xC3\xA9");
    CHECK(valid_utf8(out));
    CHECK(out.size() >= kFFFD.size() + 2 && out.compare(0, 3, kFFFD) == 0);
    CHECK_EQ(out.substr(out.size() - 2), std::string("\xC3\xA9"));
    CHECK_EQ(count(out, kFFFD) * kFFFD.size() + 2, out.size());
}

TEST_CASE(utf8_flush_drops_incomplete_tail) {
    Utf8Stream u;
    CHECK_EQ(u.push("ok\xE2\x82"), std::string("ok"));
    CHECK_EQ(u.flush(), std::string(""));
    CHECK_EQ(u.push("b"), std::string("b"));  // the dropped bytes do not come back
}

// UTF-16 surrogates (ED A0..BF), overlong forms (E0 80..9F, F0 80..8F) and code points above
// U+10FFFF (F4 90..BF) are replaced: the second byte's range depends on the lead byte.
TEST_CASE(utf8_rejects_surrogates_and_overlong_forms) {
    const char * bad[] = {
        "\xED\xA0\x80",      // U+D800, a surrogate
        "\xE0\x80\xAF",      // overlong '/'
        "\xF0\x80\x80\xAF",  // overlong '/'
        "\xF4\x90\x80\x80",  // U+110000
    };
    for (const char * b : bad) {
        Utf8Stream u;
        const std::string out = u.push(std::string("<") + b + ">");
        if (!valid_utf8(out)) std::printf("    passed on: %s\n", show(out).c_str());
        CHECK(valid_utf8(out));
        CHECK(count(out, kFFFD) >= 1);
        CHECK(out.front() == '<' && out.back() == '>');
    }
}

// ---------------------------------------------------------------- StopMatcher

namespace {
// Pushes the pieces until a stop; the emitted text, whether it stopped, and at which piece.
struct Run {
    std::string text;
    bool stopped = false;
    int at = -1;
};
Run feed(StopMatcher & m, const std::vector<std::string> & pieces) {
    Run r;
    for (size_t i = 0; i < pieces.size() && !r.stopped; ++i) {
        StopMatcher::Result res = m.push(pieces[i]);
        r.text += res.emit;
        if (res.stopped) {
            r.stopped = true;
            r.at = static_cast<int>(i);
        }
    }
    if (!r.stopped) r.text += m.flush();
    return r;
}
}  // namespace

TEST_CASE(stop_without_stops_passes_through) {
    StopMatcher m({});
    StopMatcher::Result r = m.push("STOP anything");
    CHECK_EQ(r.emit, std::string("STOP anything"));
    CHECK(!r.stopped);
    StopMatcher e({"", ""});  // empty strings are ignored
    r = e.push("abc");
    CHECK_EQ(r.emit, std::string("abc"));
    CHECK(!r.stopped);
    CHECK_EQ(e.flush(), std::string(""));
}

TEST_CASE(stop_in_one_push) {
    StopMatcher m({"STOP"});
    StopMatcher::Result r = m.push("Hello STOP world");
    CHECK_EQ(r.emit, std::string("Hello "));
    CHECK(r.stopped);
    StopMatcher n({"STOP"});
    r = n.push("STOP");
    CHECK_EQ(r.emit, std::string(""));
    CHECK(r.stopped);
}

TEST_CASE(stop_spanning_pushes) {
    StopMatcher m({"STOP"});
    StopMatcher::Result r = m.push("Hello S");
    CHECK_EQ(r.emit, std::string("Hello "));  // "S" could start the stop string
    CHECK(!r.stopped);
    r = m.push("TO");
    CHECK_EQ(r.emit, std::string(""));
    CHECK(!r.stopped);
    r = m.push("P and more");
    CHECK_EQ(r.emit, std::string(""));
    CHECK(r.stopped);
}

TEST_CASE(stop_held_back_text_released_when_it_is_not_a_stop) {
    StopMatcher m({"STOP"});
    CHECK_EQ(m.push("Hello ST").emit, std::string("Hello "));
    StopMatcher::Result r = m.push("ew");
    CHECK_EQ(r.emit, std::string("STew"));
    CHECK(!r.stopped);
    CHECK_EQ(m.flush(), std::string(""));
}

TEST_CASE(stop_flush_releases_held_text) {
    StopMatcher m({"STOP"});
    CHECK_EQ(m.push("abc STO").emit, std::string("abc "));
    CHECK_EQ(m.flush(), std::string("STO"));
    CHECK_EQ(m.flush(), std::string(""));
}

TEST_CASE(stop_holds_longest_possible_start) {
    // "aa" could start "aab"; when the stop arrives one character later, the "a" before it is
    // released with the stop.
    StopMatcher m({"aab"});
    CHECK_EQ(m.push("xaa").emit, std::string("x"));
    StopMatcher::Result r = m.push("ab");
    CHECK_EQ(r.emit, std::string("a"));
    CHECK(r.stopped);
}

TEST_CASE(stop_earliest_of_several) {
    for (const auto & stops : {std::vector<std::string>{"END", "ST"}, std::vector<std::string>{"ST", "END"}}) {
        StopMatcher m(stops);
        StopMatcher::Result r = m.push("a END b ST");
        CHECK_EQ(r.emit, std::string("a "));
        CHECK(r.stopped);
    }
    // Held back for whichever stop string its tail could start.
    StopMatcher m({"###", "\n\nUser"});
    CHECK_EQ(m.push("text\n\nUs").emit, std::string("text"));
    StopMatcher::Result r = m.push("ual");
    CHECK_EQ(r.emit, std::string("\n\nUsual"));
    CHECK(!r.stopped);
    CHECK_EQ(m.push("##").emit, std::string(""));
    r = m.push("#x");
    CHECK_EQ(r.emit, std::string(""));
    CHECK(r.stopped);
}

TEST_CASE(stop_hold_is_longest_over_all_stops) {
    // "STO" could start "STOP", its last "O" could start "OPEN": the longer hold wins, whatever
    // the order of the stop strings.
    for (const auto & stops : {std::vector<std::string>{"STOP", "OPEN"}, std::vector<std::string>{"OPEN", "STOP"}}) {
        StopMatcher m(stops);
        CHECK_EQ(m.push("xSTO").emit, std::string("x"));
        StopMatcher::Result r = m.push("P");
        CHECK_EQ(r.emit, std::string(""));
        CHECK(r.stopped);
    }
}

TEST_CASE(stop_multibyte_stop_string) {
    StopMatcher m({"\xC3\xB1o"});  // "ño"
    CHECK_EQ(m.push("a\xC3\xB1").emit, std::string("a"));
    StopMatcher::Result r = m.push("x");
    CHECK_EQ(r.emit, std::string("\xC3\xB1x"));
    CHECK(!r.stopped);
    r = m.push("\xC3\xB1o!");
    CHECK_EQ(r.emit, std::string(""));
    CHECK(r.stopped);
}

TEST_CASE(stop_any_split_gives_same_text) {
    // One stop string: however the text is cut into pushes, the same text comes out.
    const std::string with_stop = "say hello STOP there STOP";
    for_each_split(with_stop, [&](const std::vector<std::string> & parts) {
        StopMatcher m({"STOP"});
        const Run r = feed(m, parts);
        CHECK(r.stopped);
        CHECK_EQ(r.text, std::string("say hello "));
    });
    const std::string without = "say hello STO, SToP there ST";
    for_each_split(without, [&](const std::vector<std::string> & parts) {
        StopMatcher m({"STOP"});
        const Run r = feed(m, parts);
        CHECK(!r.stopped);
        CHECK_EQ(r.text, without);
    });
}

TEST_CASE(detokenize_pipeline_bytewise) {
    // As the engine does: token bytes -> Utf8Stream -> StopMatcher, one byte per token.
    const std::string text = "caf\xC3\xA9 \xE2\x82\xAC" "5 \xE2\x80\x94 fin";  // "café €5 — fin"
    Utf8Stream u;
    StopMatcher m({"\xE2\x80\x94"});  // the em dash
    std::string out;
    bool stopped = false;
    for (char c : text) {
        StopMatcher::Result r = m.push(u.push(std::string(1, c)));
        CHECK(valid_utf8(r.emit));
        out += r.emit;
        if (r.stopped) {
            stopped = true;
            break;
        }
    }
    CHECK(stopped);
    CHECK_EQ(out, std::string("caf\xC3\xA9 \xE2\x82\xAC" "5 "));
}

// ---------------------------------------------------------------- draft length (draft_length.h)

namespace {

// Steps until length() asks for a draft again (at most `limit`), counting the one that asks.
int steps_to_next_draft(DraftLength & d, double r, int limit = 1000) {
    for (int i = 1; i <= limit; ++i) {
        if (d.length(r) > 0) return i;
    }
    return -1;
}

// Rejections until the policy stops drafting (k = 0) at cost ratio r.
void reject_until_quiet(DraftLength & d, double r) {
    for (int i = 0; i < 20 && d.best_length(r) > 0; ++i) d.verified(4, 0);
}

// One engine step cycle: wait for the next draft, draft it, verify with n_accepted accepted;
// returns the wait.
int draft_once(DraftLength & d, double r, size_t n_accepted) {
    int wait = 0;
    int32_t k = 0;
    while (k == 0 && wait < 1000) {
        k = d.length(r);
        ++wait;
    }
    int32_t ignored = 0;
    const auto drafted = d.fit(std::vector<llama_token>(static_cast<size_t>(k), 7), k, 100, ignored);
    d.verified(drafted.size(), std::min(n_accepted, drafted.size()));
    return wait;
}

}  // namespace

TEST_CASE(draft_length_fresh_request_drafts_and_acceptance_lengthens) {
    DraftLength d(8, 0);
    const int32_t k0 = d.length(0.17);
    CHECK(k0 > 0 && k0 < 8);  // the prior p = 0.5 pays for a short draft only
    for (int i = 0; i < 10; ++i) d.verified(8, 8);
    CHECK_EQ(d.length(0.17), 8);
    CHECK_EQ(d.best_length(2.0), 0);  // no length beats a plain step when a token costs two steps
}

TEST_CASE(draft_length_follows_measured_step_costs_not_a_line) {
    // A batch of 4 that costs little more than one of 2 (ggml's Q4_K kernels take rows 4 at a
    // time): at high acceptance 3 drafts are best, where a linear price would ask for all 8.
    const double by_rows[] = {0, 1.0, 1.74, 2.0, 2.1, 3.2, 3.8, 4.4, 5.0, 5.6};
    const DraftLength::StepCost cost = [&](int32_t k) { return by_rows[1 + k] / by_rows[1]; };
    DraftLength d(8, 0, false, 3.0);
    for (int i = 0; i < 10; ++i) d.verified(8, 8);
    CHECK_EQ(d.best_length(cost), 3);
    CHECK_EQ(d.best_length(0.17), 8);
    // The prior p = 0.75 drafts at that table; p = 0.5 does not.
    CHECK_EQ(DraftLength(8, 0, false, 3.0).best_length(cost), 3);
    CHECK_EQ(DraftLength(8, 0).best_length(cost), 0);
    // Beside 7 other tokens a draft costs its share of a bigger batch, and yields its share.
    const DraftLength::StepCost shared = [](int32_t k) { return 1.0 + 0.05 * k; };
    CHECK_EQ(DraftLength(8, 0).best_length(shared, 8), 1);
}

TEST_CASE(draft_length_rejections_stop_drafting_then_probe) {
    DraftLength d(8, 0);
    reject_until_quiet(d, 0.17);
    CHECK_EQ(d.best_length(0.17), 0);
    CHECK_EQ(steps_to_next_draft(d, 0.17), DraftLength::kProbeSteps);
    // A probe that found nothing to draft (fit not reached) is asked again at the next step: an
    // n-gram lookup costs next to nothing.
    CHECK_EQ(d.length(0.17), 1);
}

TEST_CASE(draft_length_failed_probes_back_off_accepted_one_resets) {
    DraftLength d(8, 0, /*backoff=*/true);
    reject_until_quiet(d, 0.17);
    std::vector<int> waits;
    for (int probe = 0; probe < 6; ++probe) waits.push_back(draft_once(d, 0.17, 0));
    CHECK_EQ(waits, (std::vector<int>{16, 32, 64, 128, 256, 256}));
    CHECK_EQ(draft_once(d, 0.17, 1), DraftLength::kMaxProbeSteps);  // accepted: back to the first wait
    for (int i = 0; i < 20 && d.best_length(0.17) > 0; ++i) draft_once(d, 0.17, 0);
    CHECK_EQ(draft_once(d, 0.17, 0), DraftLength::kProbeSteps);
    DraftLength plain(8, 0);  // n-gram drafting: no back-off
    reject_until_quiet(plain, 0.17);
    CHECK_EQ(draft_once(plain, 0.17, 0), DraftLength::kProbeSteps);
    CHECK_EQ(draft_once(plain, 0.17, 0), DraftLength::kProbeSteps);
}

TEST_CASE(draft_length_empty_drafts_wait_longer_until_one_has_tokens) {
    DraftLength d(8, 0, true);
    std::vector<int> waits;
    for (int i = 0; i < 7; ++i) {
        waits.push_back(steps_to_next_draft(d, 0.17));  // asked; the draft model gives nothing
        d.drafted_nothing();
    }
    CHECK_EQ(waits, (std::vector<int>{1, 2, 3, 5, 9, 17, 17}));
    CHECK(d.best_length(0.17) > 0);  // an unsure draft is no rejected one
    CHECK_EQ(steps_to_next_draft(d, 0.17), 17);
    int32_t ignored = 0;
    CHECK_EQ(d.fit({1, 2}, 2, 10, ignored).size(), size_t(2));  // a draft with tokens ends the wait
    d.verified(2, 1);
    CHECK_EQ(steps_to_next_draft(d, 0.17), 1);
    d.drafted_nothing();
    CHECK_EQ(steps_to_next_draft(d, 0.17), 2);  // and the next wait starts short again
}

TEST_CASE(draft_length_fit_cuts_to_length_room_and_minimum) {
    DraftLength d(8, 3);
    int32_t ignored = -1;
    CHECK_EQ(d.fit({1, 2, 3, 4, 5, 6}, 4, 10, ignored), (std::vector<llama_token>{1, 2, 3, 4}));
    CHECK_EQ(ignored, 0);  // beyond k: never asked for, not counted
    CHECK_EQ(d.fit({1, 2, 3, 4, 5}, 5, 4, ignored), (std::vector<llama_token>{1, 2, 3, 4}));
    CHECK_EQ(ignored, 1);  // cut by room
    CHECK(d.fit({1, 2, 3, 4, 5}, 5, 2, ignored).empty());
    CHECK_EQ(ignored, 5);  // 3 cut by room, then 2 under the minimum of 3
    CHECK(d.fit({}, 0, 10, ignored).empty());
    CHECK_EQ(ignored, 0);
}

// ---------------------------------------------------------------- main

int main(int argc, char ** argv) {
    const bool known_bugs = argc > 1 && std::strcmp(argv[1], "--known-bugs") == 0;
    int cases = 0, failed = 0;
    for (const Case & c : registry()) {
        if ((c.known_bug != nullptr) != known_bugs) continue;
        const int before = g_failed_checks;
        c.fn();
        ++cases;
        if (g_failed_checks != before) {
            ++failed;
            std::printf("FAIL %s%s%s\n", c.name, c.known_bug ? ": known bug: " : "", c.known_bug ? c.known_bug : "");
        }
    }
    std::printf("unit_tests: %d cases, %d checks, %d failed%s\n", cases, g_checks, failed,
                known_bugs ? " (known bugs)" : "");
    return failed == 0 ? 0 : 1;
}
