// What a JSON schema may cost before llama.cpp's json-schema-to-grammar sees it.
//
// The converter is fast for most schemas but not for all: an object's optional properties become
// one alternative per suffix of the property list, built recursively with a copy of the rest at
// every step, so its time grows with the cube of their number, and names grow with nesting (a
// rule per level, named by the whole path). Measured with _core.json_schema_to_grammar on a busy
// 2-core x86 machine (2026-12-05; schema = one object of {"type": "string"} properties):
//     optional properties    100: 0.016 s   300: 0.19 s   500: 0.74 s   1,000: 5.4 s   3,000: ~43 s
//     required properties  1,000: 0.02 s   10,000: 0.68 s (grammar 0.67 MB)
//     10 objects of 300 optional properties each: 2.4 s
//     200 nested objects: 0.03 s but a 171 KB grammar (names grow with the path)
//     enum of 50,000 values: 0.12 s; anyOf of 3,000 objects: 0.07 s
// The limits below keep the worst schema they admit near a second there (cost ~6e-9 s x the sum
// of cubes of the optional counts: 512 optional properties merged into one object by allOf is
// the worst case, ~0.8 s); a schema past one is refused before any conversion, with the limit
// named. (Repetition counts such as maxLength are bounded by llama.cpp's grammar parser itself.)
#pragma once

#include <cstddef>
#include <string>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "errors.h"

namespace lmfast {

struct SchemaBudget {
    size_t max_text_bytes = 1u << 20;             // the schema's JSON text
    size_t max_nodes = 10000;                     // JSON values in the schema document
    size_t max_depth = 64;                        // nesting of the schema document
    size_t max_optional_per_object = 256;         // properties an object does not require
    size_t max_optional_total = 512;              // the same, summed over the whole schema
};

namespace schema_budget_detail {

using Json = nlohmann::json;

[[noreturn]] inline void refuse(const std::string & what) {
    throw InvalidArgument("the JSON schema is too large to turn into a grammar: " + what +
                          " (make properties required, split the schema, or leave it out)");
}

// The optional properties of one object schema: those under "properties" not named in its
// "required" (an additionalProperties schema counts as one more, as the converter treats it).
inline size_t optional_properties(const Json & obj) {
    const auto props = obj.find("properties");
    if (props == obj.end() || !props->is_object()) return 0;
    std::unordered_set<std::string> required;
    const auto req = obj.find("required");
    if (req != obj.end() && req->is_array()) {
        for (const auto & r : *req) {
            if (r.is_string()) required.insert(r.get<std::string>());
        }
    }
    size_t optional = 0;
    for (auto it = props->begin(); it != props->end(); ++it) optional += required.count(it.key()) ? 0 : 1;
    const auto extra = obj.find("additionalProperties");
    if (extra != obj.end() && !(extra->is_boolean() && !extra->get<bool>())) optional += 1;
    return optional;
}

// Sums the optional properties over every object of the document (depth is already bounded).
inline void count_optional(const Json & v, const SchemaBudget & b, size_t & total) {
    if (v.is_object()) {
        const size_t optional = optional_properties(v);
        if (optional > b.max_optional_per_object) {
            refuse("an object has " + std::to_string(optional) + " optional properties, more than the " +
                   std::to_string(b.max_optional_per_object) + " allowed in one object");
        }
        total += optional;
        if (total > b.max_optional_total) {
            refuse("it has more than " + std::to_string(b.max_optional_total) +
                   " optional properties in all (properties not listed in 'required')");
        }
    }
    if (v.is_structured()) {
        for (const auto & item : v) count_optional(item, b, total);
    }
}

// Counts values and depth as the text is read, refusing at the first excess.
class SizeCounter : public nlohmann::json_sax<Json> {
public:
    explicit SizeCounter(const SchemaBudget & b) : b_(b) {}
    bool null() override { return value(); }
    bool boolean(bool) override { return value(); }
    bool number_integer(number_integer_t) override { return value(); }
    bool number_unsigned(number_unsigned_t) override { return value(); }
    bool number_float(number_float_t, const string_t &) override { return value(); }
    bool string(string_t &) override { return value(); }
    bool binary(binary_t &) override { return value(); }
    bool key(string_t &) override { return true; }
    bool start_object(std::size_t) override { return open(); }
    bool end_object() override { return close(); }
    bool start_array(std::size_t) override { return open(); }
    bool end_array() override { return close(); }
    bool parse_error(std::size_t, const std::string &, const nlohmann::detail::exception & e) override {
        throw InvalidArgument(std::string("the JSON schema is not valid JSON: ") + e.what());
    }

private:
    bool value() {
        if (++nodes_ > b_.max_nodes) refuse("it has more than " + std::to_string(b_.max_nodes) + " JSON values (nodes)");
        return true;
    }
    bool open() {
        if (++depth_ > b_.max_depth) refuse("it nests deeper than " + std::to_string(b_.max_depth) + " levels");
        return value();
    }
    bool close() {
        --depth_;
        return true;
    }
    const SchemaBudget & b_;
    size_t nodes_ = 0;
    size_t depth_ = 0;
};

}  // namespace schema_budget_detail

// Throws InvalidArgument (a ValueError in Python, a 400 from the server) naming the first limit
// the schema's JSON text passes. Cheap: nodes and depth are counted while parsing (stopping at
// the first excess, before a tree is built), then one walk counts optional properties.
inline void check_schema_budget(const std::string & text, const SchemaBudget & b = {}) {
    using namespace schema_budget_detail;
    if (text.size() > b.max_text_bytes) {
        refuse("its JSON text is " + std::to_string(text.size()) + " bytes, more than the " +
               std::to_string(b.max_text_bytes) + " allowed");
    }
    // A SAX pass first (nlohmann's callback parser is quadratic in an object's keys: it rescans
    // the parent at every child's end), then the tree.
    SizeCounter counter(b);
    try {
        Json::sax_parse(text, &counter);
    } catch (const Json::exception & e) {
        throw InvalidArgument(std::string("the JSON schema is not valid JSON: ") + e.what());
    }
    const Json doc = Json::parse(text);
    size_t total = 0;
    count_optional(doc, b, total);
}

}  // namespace lmfast
