"""Full-text search over the stories of stored issues: the `story_search` FTS5 table.

The index follows `issue_stories` (migration 3): `index_stories` is called by `save_issue` in
the same transaction. rowid = YYYYMMDD * 10000 + position, so the rows of one issue are one
rowid range that a rebuild replaces without scanning the index; the tokenizer's
remove_diacritics 2 folds accents, so "reglement" finds "règlement".
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence

from pipeline.errors import PipelineError
from pipeline.store.query import SearchTerm, search_terms
from pipeline.store.records import IssueStory, SearchHit
from pipeline.store.sqlite.base import SqliteBase, store_errors

_SEARCH_SLOTS = 10_000  # rowids per issue: an issue has fewer stories than this


def _search_rowid(date: dt.date, position: int) -> int:
    if not 0 <= position < _SEARCH_SLOTS:
        raise ValueError(f"issue {date.isoformat()} has more than {_SEARCH_SLOTS} stories")
    return int(date.strftime("%Y%m%d")) * _SEARCH_SLOTS + position


def fts_query(terms: Sequence[SearchTerm]) -> str:
    """Search terms as an FTS5 query: each word quoted (so it is never FTS5 syntax), a phrase as
    one quoted string, a prefix with its *."""
    return " ".join('"' + " ".join(t.words) + '"' + ("*" if t.prefix else "") for t in terms)


def index_stories(db: sqlite3.Connection, date: dt.date, stories: Sequence[IssueStory]) -> None:
    """Replace the search entries of one issue (inside the caller's transaction)."""
    first = _search_rowid(date, 0)
    db.execute("DELETE FROM story_search WHERE rowid BETWEEN ? AND ?", (first, first + _SEARCH_SLOTS - 1))
    db.executemany(
        "INSERT INTO story_search (rowid, title, kicker, text, source, date, position) VALUES (?,?,?,?,?,?,?)",
        [
            (_search_rowid(date, s.position), s.title, s.kicker, s.text, s.source, date.isoformat(), s.position)
            for s in stories
        ],
    )


class SqliteSearch(SqliteBase):
    def search_stories(self, query: str, limit: int = 20, topic: str | None = None,
                       marks: tuple[str, str] = ("[", "]")) -> list[SearchHit]:
        # bm25 with the title weighing most, then the newest issue.
        match = fts_query(search_terms(query))
        sql = (
            "SELECT s.date, s.position, s.story_id, s.topic, s.topics, s.kicker, s.title, s.source, s.url,"
            " snippet(story_search, -1, ?, ?, '…', 14) AS snippet,"
            " bm25(story_search, 8.0, 3.0, 1.0, 2.0) AS rank"
            " FROM story_search JOIN issue_stories s"
            " ON s.date = story_search.date AND s.position = story_search.position"
            " WHERE story_search MATCH ?"
        )
        args: list[object] = [marks[0], marks[1], match]
        if topic is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(s.topics) WHERE json_each.value = ?)"
            args.append(topic)
        sql += " ORDER BY rank, s.date DESC, s.position LIMIT ?"
        args.append(limit)
        with store_errors():
            try:
                rows = self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise PipelineError(f"search query {query!r}: {exc}") from None
        return [
            SearchHit(
                date=dt.date.fromisoformat(r["date"]), position=r["position"], story_id=r["story_id"],
                topic=r["topic"], topics=tuple(json.loads(r["topics"])), kicker=r["kicker"], title=r["title"],
                source=r["source"], url=r["url"], snippet=r["snippet"], rank=float(r["rank"]),
            )
            for r in rows
        ]
