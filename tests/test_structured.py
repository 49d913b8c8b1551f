"""Structured output: response_format constrains generation with a grammar and fills
result.parsed (SDK semantics: a dict, also for a pydantic class)."""
import json

import jsonschema
import pydantic
import pytest

import lmfast as lms

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "enum": ["Paris", "Berlin", "Rome", "Madrid"]},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "age", "city", "hobbies"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_twenty_sampled_generations_all_validate(llm):
    """20 sampled (not greedy) generations: every one parses and validates."""
    outputs = set()
    for seed in range(20):
        result = llm.respond("Invent a person and describe them as JSON.", response_format=PERSON,
                             config={"temperature": 0.9, "seed": seed, "maxTokens": 200})
        assert result.stats.stop_reason == "eosFound", result.content
        assert result.structured
        assert isinstance(result.parsed, dict)
        jsonschema.validate(result.parsed, PERSON)
        assert json.loads(result.content) == result.parsed
        assert json.loads(str(result)) == result.parsed
        assert result.prediction_config["structured"] == {"type": "json", "jsonSchema": PERSON}
        outputs.add(result.content)
    assert len(outputs) > 5  # sampling still varies the content within the schema


class Capital(pydantic.BaseModel):
    country: str = pydantic.Field(max_length=30)
    capital: str = pydantic.Field(max_length=30)
    population_millions: float


def test_pydantic_class(llm):
    result = llm.respond("What is the capital of France? Answer in JSON.", response_format=Capital,
                         config={"temperature": 0, "maxTokens": 120})
    assert type(result.parsed) is dict  # as in the SDK: a dict, not an instance
    Capital.model_validate(result.parsed)
    assert "Paris" in result.parsed["capital"]


class Book(lms.BaseModel):
    title: str
    year: int
    tags: list[str]


def test_lmfast_base_model():
    assert isinstance(Book, lms.ModelSchema)
    schema = Book.model_json_schema()
    assert schema["required"] == ["title", "year", "tags"]
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}


def test_lmfast_base_model_as_response_format(llm):
    result = llm.respond("Name a famous book as JSON.", response_format=Book,
                         config={"temperature": 0, "maxTokens": 150})
    jsonschema.validate(result.parsed, Book.model_json_schema())


def test_gbnf_grammar(llm):
    fmt = {"type": "gbnf", "gbnfGrammar": 'root ::= "yes" | "no"'}
    result = llm.respond("Is Paris in France?", response_format=fmt, config={"temperature": 0})
    assert result.content in ("yes", "no")
    assert result.parsed == result.content and not result.structured  # not a JSON object


def test_structured_in_config_and_streaming(llm):
    cfg = {"temperature": 0, "maxTokens": 200, "structured": {"type": "json", "jsonSchema": PERSON}}
    stream = llm.respond_stream("Describe a person as JSON.", config=cfg)
    text = "".join(f.content for f in stream)
    result = stream.result()
    assert text == result.content
    jsonschema.validate(result.parsed, PERSON)


def test_complete_with_schema(llm):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    result = llm.complete("2 + 2 = ", response_format=schema, config={"temperature": 0, "maxTokens": 30})
    assert isinstance(result.parsed["answer"], int)


@pytest.mark.parametrize("fmt", [42, "json", {"foo": 1}, {"type": "gbnf"}, {"type": "json", "jsonSchema": 3}])
def test_unparseable_response_format(llm, fmt):
    with pytest.raises(lms.LMStudioValueError):
        llm.respond("hi", response_format=fmt)


def test_both_response_format_and_config(llm):
    with pytest.raises(lms.LMStudioValueError, match="not both"):
        llm.respond("hi", response_format=PERSON, config={"structured": {"type": "json", "jsonSchema": PERSON}})


def test_bad_grammar_is_the_callers_error(llm):
    with pytest.raises(lms.LMStudioValueError, match="grammar"):
        llm.respond("hi", response_format={"type": "gbnf", "gbnfGrammar": "root ::= ("})
    assert "Paris" in llm.respond("What is the capital of France?", config={"temperature": 0}).content


def test_cancelled_structured_prediction_is_not_parsed(llm):
    stream = llm.respond_stream("Describe a person as JSON.", response_format=PERSON,
                                config={"temperature": 0, "maxTokens": 200})
    for i, _ in enumerate(stream):
        if i == 2:
            stream.cancel()
    result = stream.result()
    assert result.stats.stop_reason == "userStopped"
    assert result.parsed is result.content
