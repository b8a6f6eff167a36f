"""Full-text search over the stories of stored issues: `issue_stories.search`, a generated
tsvector in the `tech_matin_french` configuration (unaccent, then French stemming; see schema).

A query's terms (pipeline.store.query) become one tsquery built from quoted lexemes only, so a
user's punctuation is never tsquery syntax. Ranking follows the SQLite backend: ts_rank with the
title weighing most (then kicker, source, text), then the newest issue.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.store.postgres.base import PostgresBase
from pipeline.store.query import SearchTerm, search_terms
from pipeline.store.records import SearchHit

# ts_rank's weights for D, C, B, A: text 1, source 2, kicker 3, title 8, as SQLite's bm25 columns.
_WEIGHTS = "{0.125, 0.25, 0.375, 1.0}"


def ts_query(terms: Sequence[SearchTerm]) -> str:
    """Search terms as to_tsquery text: words quoted, a phrase joined by <->, a prefix with :*."""
    parts = []
    for term in terms:
        words = [f"'{word}'" for word in term.words]  # \\w+ words: no quote inside
        parts.append("(" + " <-> ".join(words) + ")" if len(words) > 1 else words[0] + (":*" if term.prefix else ""))
    return " & ".join(parts)


class PostgresSearch(PostgresBase):
    def search_stories(self, query: str, limit: int = 20, topic: str | None = None,
                       marks: tuple[str, str] = ("[", "]")) -> list[SearchHit]:
        options = (f"StartSel={marks[0]}, StopSel={marks[1]}, MaxWords=14, MinWords=6, ShortWord=2,"
                   " MaxFragments=1, FragmentDelimiter=…")
        rows = self._rows(
            "WITH q AS (SELECT to_tsquery('tech_matin_french', %(query)s) AS query)"
            " SELECT s.date, s.position, s.story_id, s.topic, s.topics, s.kicker, s.title, s.source, s.url,"
            "  ts_headline('tech_matin_french', concat_ws(' … ', s.title, s.kicker, s.text), q.query, %(options)s)"
            "   AS snippet,"
            "  -ts_rank(%(weights)s::real[], s.search, q.query) AS rank"
            " FROM issue_stories s, q"
            " WHERE s.search @@ q.query AND (%(topic)s::text IS NULL OR s.topics ? %(topic)s)"
            " ORDER BY rank, s.date DESC, s.position LIMIT %(limit)s",
            {"query": ts_query(search_terms(query)), "options": options, "weights": _WEIGHTS, "topic": topic,
             "limit": limit},
        )
        return [
            SearchHit(date=r["date"], position=r["position"], story_id=r["story_id"], topic=r["topic"],
                      topics=tuple(r["topics"]), kicker=r["kicker"], title=r["title"], source=r["source"],
                      url=r["url"], snippet=r["snippet"], rank=float(r["rank"]))
            for r in rows
        ]
