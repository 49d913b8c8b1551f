"""Model-free tests of the native CallFilter (csrc/detokenizer.h), which keeps tool-call syntax
out of a request's streamed text:
text passes until a call marker shows up and nothing passes after it; a fragment's tail that
could start a marker is held until the next fragment decides. Expected texts are worked out from
that contract (the markers below are real formats' trigger words)."""
from __future__ import annotations

import itertools

import pytest

from lmfast._core import CallFilter as CallTextFilter

HERMES = "<tool_call>"
LLAMA3 = "<|python_tag|>"
MISTRAL = "[TOOL_CALLS]"


def stream(f: CallTextFilter, fragments: list[str]) -> str:
    """What a consumer of the stream reads: every fragment's output, then flush()."""
    return "".join(f.push(p) for p in fragments) + f.flush()


def splits(text: str) -> list[list[str]]:
    """Every way to cut text into three consecutive fragments (empty ones included)."""
    return [[text[:i], text[i:j], text[j:]] for i, j in itertools.combinations_with_replacement(range(len(text) + 1), 2)]


def test_text_without_markers_passes_unchanged() -> None:
    f = CallTextFilter([HERMES])
    assert f.push("Hello, ") == "Hello, "
    assert f.push("world.") == "world."
    assert f.flush() == ""


def test_marker_inside_one_fragment_cuts_there() -> None:
    f = CallTextFilter([HERMES])
    assert f.push('Let me check. <tool_call>{"name": "add"') == "Let me check. "
    assert f.push('"arguments": {}}</tool_call>') == ""  # nothing after a marker
    assert f.push("more text") == ""
    assert f.flush() == ""


def test_marker_split_across_fragments() -> None:
    f = CallTextFilter([HERMES])
    assert f.push("Sure <to") == "Sure "  # "<to" could start the marker: held
    assert f.push("ol_") == ""
    assert f.push("call>") == ""
    assert f.push('{"name": "x"}') == ""
    assert f.flush() == ""


def test_held_tail_released_when_not_a_marker() -> None:
    f = CallTextFilter([HERMES])
    assert f.push("a <to") == "a "
    assert f.push("y> b") == "<toy> b"
    assert f.push(" x<") == " x"
    assert f.push("3") == "<3"
    assert f.flush() == ""


def test_flush_releases_held_tail() -> None:
    f = CallTextFilter([HERMES])
    assert f.push("the end <tool_c") == "the end "
    assert f.flush() == "<tool_c"
    assert f.flush() == ""


def test_longest_possible_start_is_held() -> None:
    # "[TOOL_CALL" could start the Mistral marker, its "CALL" another marker "CALLS": the longer
    # tail is held, whatever the order of the markers.
    for markers in ([MISTRAL, "CALLS"], ["CALLS", MISTRAL]):
        f = CallTextFilter(markers)
        assert f.push("x [TOOL_CALL") == "x "
        assert f.push("S] {}") == ""
        assert f.flush() == ""


def test_earliest_of_several_markers_wins() -> None:
    for markers in ([HERMES, MISTRAL], [MISTRAL, HERMES]):
        f = CallTextFilter(markers)
        assert f.push("a <tool_call> b [TOOL_CALLS] c") == "a "
        assert f.flush() == ""


def test_empty_markers_are_ignored() -> None:
    f = CallTextFilter(["", HERMES])
    assert f.push("plain") == "plain"
    g = CallTextFilter([])
    assert g.push("<tool_call> and all") == "<tool_call> and all"
    assert g.flush() == ""


@pytest.mark.parametrize("text, expected", [
    ("Calling it now<tool_call>{\"name\": \"f\"}", "Calling it now"),
    ("<tool_call>{}", ""),
    ("no call, only <tool and <tool_cal", "no call, only <tool and <tool_cal"),
    ("<<tool_call>", "<"),
])
def test_any_split_gives_the_same_text(text: str, expected: str) -> None:
    for fragments in splits(text):
        assert stream(CallTextFilter([HERMES]), fragments) == expected, fragments


def test_any_split_with_several_markers() -> None:
    text = "x [TOOL_CALL <|python <tool_call>{} [TOOL_CALLS]"
    for fragments in splits(text):
        assert stream(CallTextFilter([HERMES, MISTRAL, LLAMA3]), fragments) == "x [TOOL_CALL <|python ", fragments
