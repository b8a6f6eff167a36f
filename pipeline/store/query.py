"""A user's search words, read once for every backend: what to look for, not how to ask.

Every word must appear (any order); "quoted words" must appear as a phrase; a word ending in *
matches as a prefix. Only runs of word characters are kept, so punctuation ("l'IA", "AI-Act",
parentheses, AND/OR written by the user) can never become the syntax of a backend's query.

A query is bounded (issue 16: a 5,000-word query took 8.6 s, the backends' matching grows with
the square of the number of terms): at most MAX_QUERY_CHARACTERS, checked before anything is
read, and MAX_QUERY_WORDS words once a repeated term is counted once. Reading it is one pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class SearchTerm:
    words: tuple[str, ...]  # one word, or the words of a phrase in order
    prefix: bool = False  # the (single) word may be the start of a longer one


MAX_QUERY_CHARACTERS = 1_000
MAX_QUERY_WORDS = 32
_TERM_RE = re.compile(r'"([^"]*)"?|(\S+)')
_WORD_RE = re.compile(r"\w+")


def search_terms(text: str) -> list[SearchTerm]:
    """The terms of a query, each once, in order; a PipelineError when it has no word at all or
    is longer than the bounds."""
    if len(text) > MAX_QUERY_CHARACTERS:
        raise PipelineError(f"search query of {len(text):,} characters; at most {MAX_QUERY_CHARACTERS:,}")
    terms: dict[tuple[tuple[str, ...], bool], SearchTerm] = {}  # a repeated term (any case) counts once

    def add(term: SearchTerm) -> None:
        terms.setdefault((tuple(word.casefold() for word in term.words), term.prefix), term)

    for phrase, bare in _TERM_RE.findall(text):
        if phrase:
            words = _WORD_RE.findall(phrase)
            if words:
                add(SearchTerm(tuple(words)))
            continue
        words = _WORD_RE.findall(bare)
        for position, word in enumerate(words):
            add(SearchTerm((word,), prefix=bare.endswith("*") and position == len(words) - 1))
    if not terms:
        raise PipelineError(f"search query {text!r} has no word to look for")
    count = sum(len(term.words) for term in terms.values())
    if count > MAX_QUERY_WORDS:
        raise PipelineError(f"search query of {count} words; at most {MAX_QUERY_WORDS} (every word must appear: "
                            "keep the ones that matter)")
    return list(terms.values())
