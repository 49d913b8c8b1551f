// A JSON schema (structured output) as the GBNF grammar a request is constrained by.
#pragma once

#include <string>

namespace lmfast {

// llama.cpp's converter: a GBNF grammar whose root accepts exactly the JSON documents the schema
// (given as JSON text) describes, for the subset of JSON Schema it supports. The schema is held to
// schema_budget.h's limits first (the converter's time grows with the cube of an object's optional
// properties). Throws InvalidArgument for a schema over budget or one the converter refuses.
std::string schema_grammar(const std::string & schema);

}  // namespace lmfast
