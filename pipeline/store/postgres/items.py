"""Items (`items` table) and their classifications (`classifications`, keyed by rules fingerprint)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from psycopg.types.json import Jsonb

from pipeline.models import Classification, Item, Match, match_records
from pipeline.store.codec import item_content_sha256, to_utc
from pipeline.store.postgres.base import PostgresBase, Row


def _item(row: Row) -> Item:
    return Item(
        id=row["id"], feed_id=row["feed_id"], source=row["source"], title=row["title"], url=row["url"],
        summary=row["summary"], content=row["content"], guid=row["guid"], language=row["language"],
        published=row["published"], author=row["author"], categories=tuple(row["categories"]),
        first_seen=row["first_seen"],
    )


class PostgresItems(PostgresBase):
    def upsert_items(self, items: Iterable[Item]) -> int:
        rows = []
        for item in items:
            if item.first_seen is None:
                raise ValueError(f"item {item.id} has no first_seen time")
            published, first_seen = to_utc(item.published), to_utc(item.first_seen)
            rows.append((item.id, item.feed_id, item.source, item.guid, item.url, item.title, item.summary,
                         item.content, item.language, published, item.author, Jsonb(list(item.categories)),
                         first_seen, published or first_seen, item_content_sha256(item)))
        new = 0
        with self._transaction() as db, db.cursor() as cursor:
            # An item stored again with other content loses the classification made of its old text
            # (classifications are keyed by item and rules only); '' (stored before the digests) counts as other.
            db.execute("DELETE FROM classifications c USING items i, unnest(%s::text[], %s::text[]) AS n(id, digest)"
                       " WHERE c.item_id = i.id AND i.id = n.id AND i.content_sha256 <> n.digest",
                       ([row[0] for row in rows], [row[-1] for row in rows]))
            # first_seen never moves: an update keeps the stored one, and the undated effective time with it.
            cursor.executemany(
                "INSERT INTO items AS i (id, feed_id, source, guid, url, title, summary, content, language,"
                " published, author, categories, first_seen, effective_time, content_sha256)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT (id) DO UPDATE SET feed_id = excluded.feed_id, source = excluded.source,"
                " guid = excluded.guid, url = excluded.url, title = excluded.title, summary = excluded.summary,"
                " content = excluded.content, language = excluded.language, published = excluded.published,"
                " author = excluded.author, categories = excluded.categories,"
                " content_sha256 = excluded.content_sha256, effective_time = COALESCE(excluded.published, i.first_seen)"
                " RETURNING (xmax = 0) AS inserted",
                rows, returning=True,
            )
            while True:
                found = cursor.fetchone()
                new += bool(found and found["inserted"])
                if not cursor.nextset():
                    break
        return new

    def items_between(self, start: dt.datetime, end: dt.datetime) -> list[Item]:
        rows = self._rows("SELECT * FROM items WHERE effective_time >= %s AND effective_time < %s"
                          " ORDER BY effective_time, id", (to_utc(start), to_utc(end)))
        return [_item(row) for row in rows]

    def item_digests_between(self, start: dt.datetime, end: dt.datetime) -> list[tuple[str, str]]:
        rows = self._rows("SELECT id, content_sha256 FROM items WHERE effective_time >= %s AND effective_time < %s"
                          " ORDER BY effective_time, id", (to_utc(start), to_utc(end)))
        return [(row["id"], row["content_sha256"]) for row in rows]

    def count_items_between(self, start: dt.datetime, end: dt.datetime) -> int:
        return self._count("SELECT count(*) FROM items WHERE effective_time >= %s AND effective_time < %s",
                           (to_utc(start), to_utc(end)))

    def item_count(self) -> int:
        return self._count("SELECT count(*) FROM items")

    def all_items(self) -> list[Item]:
        return [_item(row) for row in self._rows("SELECT * FROM items ORDER BY effective_time, id")]

    def save_classifications(self, classifications: Iterable[Classification], fingerprint: str) -> None:
        rows = [
            (c.item_id, fingerprint, Jsonb(list(c.topics)), Jsonb(c.scores),
             Jsonb(match_records(c.matches)))
            for c in classifications
        ]
        with self._transaction() as db, db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO classifications (item_id, fingerprint, topics, scores, matches)"
                " VALUES (%s,%s,%s,%s,%s) ON CONFLICT (item_id) DO UPDATE SET fingerprint = excluded.fingerprint,"
                " topics = excluded.topics, scores = excluded.scores, matches = excluded.matches",
                rows,
            )

    def classifications(self, item_ids: Sequence[str], fingerprint: str) -> dict[str, Classification]:
        rows = self._rows("SELECT * FROM classifications WHERE fingerprint = %s AND item_id = ANY(%s)",
                          (fingerprint, list(item_ids)))
        return {
            row["item_id"]: Classification(
                item_id=row["item_id"], topics=tuple(row["topics"]), scores=row["scores"],
                matches=tuple(Match(**m) for m in row["matches"]),
            )
            for row in rows
        }
