"""A user's search words, read once for every backend: what to look for, not how to ask.

Every word must appear (any order); "quoted words" must appear as a phrase; a word ending in *
matches as a prefix. Only runs of word characters are kept, so punctuation ("l'IA", "AI-Act",
parentheses, AND/OR written by the user) can never become the syntax of a backend's query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class SearchTerm:
    words: tuple[str, ...]  # one word, or the words of a phrase in order
    prefix: bool = False  # the (single) word may be the start of a longer one


def search_terms(text: str) -> list[SearchTerm]:
    """The terms of a query; a PipelineError when it has no word at all."""
    terms: list[SearchTerm] = []
    for phrase, bare in re.findall(r'"([^"]*)"?|(\S+)', text):
        if phrase:
            words = re.findall(r"\w+", phrase)
            if words:
                terms.append(SearchTerm(tuple(words)))
            continue
        words = re.findall(r"\w+", bare)
        for position, word in enumerate(words):
            terms.append(SearchTerm((word,), prefix=bare.endswith("*") and position == len(words) - 1))
    if not terms:
        raise PipelineError(f"search query {text!r} has no word to look for")
    return terms
