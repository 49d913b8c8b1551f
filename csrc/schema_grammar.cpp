#include "schema_grammar.h"

#include "errors.h"
#include "json-schema-to-grammar.h"
#include "schema_budget.h"

namespace lmfast {

std::string schema_grammar(const std::string & schema) {
    check_schema_budget(schema);
    try {
        return json_schema_to_grammar(common_json::parse(schema));
    } catch (const std::exception & e) {
        throw InvalidArgument(std::string("the JSON schema cannot be turned into a grammar: ") + e.what());
    }
}

}  // namespace lmfast
