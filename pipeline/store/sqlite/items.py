"""Items (`items` table) and their classifications (`classifications`, keyed by rules fingerprint)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.models import Classification, Item, Match, match_records
from pipeline.store.codec import from_iso, item_content_sha256, to_iso
from pipeline.store.sqlite.base import SqliteBase

_CHUNK = 500  # ids per `IN (…)` query, well under SQLite's limit of bound parameters


# The columns _item takes, in its order: items are read as plain tuples, unpacked at once (a
# rebuild of every issue reads 18,250 of them; sqlite3.Row's lookups by name cost a third more).
_ITEM_COLUMNS = ("id, feed_id, source, title, url, summary, content, guid, language, published, author, categories,"
                 " first_seen")


def _item(row: tuple[Any, ...]) -> Item:
    (item_id, feed_id, source, title, url, summary, content, guid, language, published, author, categories,
     first_seen) = row
    return Item(
        id=item_id, feed_id=feed_id, source=source, title=title, url=url, summary=summary, content=content,
        guid=guid, language=language, published=from_iso(published), author=author,
        categories=() if categories == "[]" else tuple(json.loads(categories)),  # most items have none
        first_seen=from_iso(first_seen),
    )


class SqliteItems(SqliteBase):
    def upsert_items(self, items: Iterable[Item]) -> int:
        new = 0
        with self._transaction() as db:
            for item in items:
                if item.first_seen is None:
                    raise ValueError(f"item {item.id} has no first_seen time")
                effective = item.published or item.first_seen
                values = (
                    item.feed_id, item.source, item.guid, item.url, item.title, item.summary, item.content,
                    item.language, to_iso(item.published), item.author,
                    json.dumps(list(item.categories), ensure_ascii=False), item_content_sha256(item),
                )
                existing = db.execute("SELECT first_seen, content_sha256 FROM items WHERE id = ?",
                                      (item.id,)).fetchone()
                if existing is None:
                    db.execute(
                        "INSERT INTO items (feed_id, source, guid, url, title, summary, content, language,"
                        " published, author, categories, content_sha256, id, first_seen, effective_time)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (*values, item.id, to_iso(item.first_seen), to_iso(effective)),
                    )
                    new += 1
                else:
                    if existing["content_sha256"] != values[-1]:
                        # Its classification was made of the old text (keyed by item and rules only).
                        db.execute("DELETE FROM classifications WHERE item_id = ?", (item.id,))
                    db.execute(
                        "UPDATE items SET feed_id=?, source=?, guid=?, url=?, title=?, summary=?, content=?,"
                        " language=?, published=?, author=?, categories=?, content_sha256=?, effective_time=?"
                        " WHERE id=?",
                        (*values, to_iso(item.published) or existing["first_seen"], item.id),
                    )
        return new

    def items_between(self, start: dt.datetime, end: dt.datetime) -> list[Item]:
        rows = self._tuples(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE effective_time >= ? AND effective_time < ?"
            " ORDER BY effective_time, id",
            (to_iso(start), to_iso(end)),
        )
        return [_item(row) for row in rows]

    def item_digests_between(self, start: dt.datetime, end: dt.datetime) -> list[tuple[str, str]]:
        rows = self._tuples("SELECT id, content_sha256 FROM items WHERE effective_time >= ? AND effective_time < ?"
                            " ORDER BY effective_time, id", (to_iso(start), to_iso(end)))
        return [(item_id, digest) for item_id, digest in rows]

    def count_items_between(self, start: dt.datetime, end: dt.datetime) -> int:
        return self._count("SELECT count(*) FROM items WHERE effective_time >= ? AND effective_time < ?",
                           (to_iso(start), to_iso(end)))

    def item_count(self) -> int:
        return self._count("SELECT count(*) FROM items")

    def all_items(self) -> list[Item]:
        return [_item(row) for row in self._tuples(f"SELECT {_ITEM_COLUMNS} FROM items ORDER BY effective_time, id")]

    def save_classifications(self, classifications: Iterable[Classification], fingerprint: str) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO classifications (item_id, fingerprint, topics, scores, matches)"
                " VALUES (?,?,?,?,?)",
                [
                    (
                        c.item_id, fingerprint, json.dumps(list(c.topics)),
                        json.dumps(c.scores, sort_keys=True),
                        json.dumps(match_records(c.matches),
                                   ensure_ascii=False),
                    )
                    for c in classifications
                ],
            )

    def classifications(self, item_ids: Sequence[str], fingerprint: str) -> dict[str, Classification]:
        found: dict[str, Classification] = {}
        for start in range(0, len(item_ids), _CHUNK):
            chunk = list(item_ids[start : start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            for row in self._rows(
                f"SELECT * FROM classifications WHERE fingerprint = ? AND item_id IN ({marks})",
                [fingerprint, *chunk],
            ):
                found[row["item_id"]] = Classification(
                    item_id=row["item_id"], topics=tuple(json.loads(row["topics"])),
                    scores=json.loads(row["scores"]),
                    matches=tuple(Match(**m) for m in json.loads(row["matches"])),
                )
        return found
