"""Benchmark: grouping a day's items by story, candidate pairs from shared rare words against
comparing every pair.

Generates N on-topic French items from a seeded random generator: stories told by one to four
outlets (of 60), each story with its own names, figures and places and each outlet wording it
its own way, on a shared topical vocabulary (CNIL, règlement, données…) and common words, all
within 30 hours. Then measures in the same run:

(a) all pairs: ``group_stories(..., all_pairs=True)``: the similarity of every pair of items
    (what compose did before: 5,000 items took 72 s);
(b) the index: ``group_stories(...)``: only the pairs that share one of the rarest words of
    the smaller item (prefix filtering over an inverted index), same similarity, same groups.

Prints the time of each, the ratio a/b, the pairs compared, and (b) at N/4, N/2 and N so that
its growth shows (time per item). Times are CPU time of this process (``time.process_time``),
best of ``--rounds`` rounds for (b) (one round of (a), the slow one). Checks that (a) and (b)
give the same groups.

    .venv/bin/python benchmarks/compose.py [--items N] [--rounds R]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.compose import _Window, group_stories  # noqa: E402
from pipeline.models import Classification, Item, StoredItem  # noqa: E402

SEED = 20250506
TOPICS = ("meta_ai", "rgpd", "ai_act", "media_partnership")
TOPICAL = """
données personnelles protection CNIL règlement européen intelligence artificielle modèles
sanction amende consentement opposition formulaire utilisateurs publications entraînement
Commission Bruxelles obligations fournisseurs usage général risque transparence autorité
contrôle plainte association éditeurs presse accord licence contenus droits voisins
plateformes négociations transferts cookies mise demeure décision enquête conformité
traitement base légale intérêt légitime données sensibles santé biométrie reconnaissance
faciale surveillance algorithmes chatbot assistant agents systèmes déploiement calendrier
échéance lignes directrices code bonnes pratiques bureau gouvernance européenne Parlement
Conseil États membres sénateurs députés ministre numérique souveraineté""".split()
SYLLABLES = "ka lo mi ne ru sa ti vo ze bra cle dri fro glu pla tre vin sor mal ber qui xo yan".split()
VOCABULARY = 20_000  # the general words of the day's news, drawn with Zipf's law


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    """`size` distinct made-up words of two to four syllables."""
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(3, 5)))] = None
    return list(words)


def make_items(count: int, seed: int = SEED) -> list[StoredItem]:
    """`count` on-topic items: stories told by one to four outlets (now and then eight), each
    outlet in its own words: a share of the story's facts (names, figures, words), topical words and
    general words drawn with Zipf's law, as in news text."""
    rng = random.Random(seed)
    general = _vocabulary(rng, VOCABULARY + 40_000)
    general, names = general[:VOCABULARY], iter(general[VOCABULARY:])
    zipf = list(itertools.accumulate(1 / rank for rank in range(1, VOCABULARY + 1)))
    topical_weights = list(itertools.accumulate(1 / rank for rank in range(1, len(TOPICAL) + 1)))
    feeds = [f"feed{n:02d}" for n in range(60)]
    start = dt.datetime(2025, 5, 5, 4, 0, tzinfo=dt.UTC)
    items: list[StoredItem] = []
    story = 0
    while len(items) < count:
        story += 1
        outlets = rng.choices((1, 2, 3, 4, 8), weights=(52, 25, 12, 8, 3))[0]
        topics = tuple(sorted(rng.sample(TOPICS, rng.choice((1, 1, 2)))))
        # What every telling of the story draws on: its names and figures, and its own words.
        facts = [next(names).capitalize() for _ in range(5)] + [str(rng.randint(2, 900))]
        facts += rng.choices(general[200:], k=20)
        when = start + dt.timedelta(minutes=rng.randint(0, 24 * 60))
        for feed in rng.sample(feeds, outlets):
            if len(items) == count:
                break
            number = len(items)
            told = rng.sample(facts, 16)
            words = (told + rng.choices(TOPICAL, cum_weights=topical_weights, k=6)
                     + rng.choices(general, cum_weights=zipf, k=24))
            rng.shuffle(words)
            title = " ".join([*told[:2], *words[:6]]).capitalize()
            summary = ". ".join(" ".join(words[i : i + 12]).capitalize() for i in range(0, len(words), 12)) + "."
            published = when + dt.timedelta(minutes=rng.randint(0, 6 * 60))
            item = Item(id=f"i{number:05d}", feed_id=feed, source=feed, title=title, summary=summary,
                        url=f"https://{feed}.example/{story}/{number}", published=published,
                        first_seen=published)
            items.append(StoredItem(item, Classification(item.id, topics, dict.fromkeys(topics, 3.0))))
    return items


def _timed(items: list[StoredItem], rounds: int, all_pairs: bool = False) -> tuple[float, list[set[str]]]:
    best = float("inf")
    groups: list[set[str]] = []
    for _ in range(rounds):
        began = time.process_time()
        result = group_stories(items, {}, all_pairs=all_pairs)
        best = min(best, time.process_time() - began)
        groups = [{e.item.id for e in group} for group in result.groups]
    return best, groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    items = make_items(args.items)
    window = _Window(items, (), {})
    candidates = len(window.candidate_pairs())
    every = args.items * (args.items - 1) // 2
    print(f"{args.items} items, {every:,} pairs; the index compares {candidates:,} ({candidates / every:.2%})")
    for share in (4, 2):
        part = items[: args.items // share]
        seconds, _ = _timed(part, args.rounds)
        print(f"(b) index, {len(part)} items: {seconds:.2f} s ({seconds / len(part) * 1e6:.0f} µs per item)")
    indexed, groups_b = _timed(items, args.rounds)
    print(f"(b) index, {args.items} items: {indexed:.2f} s ({indexed / args.items * 1e6:.0f} µs per item)")
    naive, groups_a = _timed(items, 1, all_pairs=True)
    print(f"(a) all pairs, {args.items} items: {naive:.2f} s")
    same = sorted(map(sorted, groups_a)) == sorted(map(sorted, groups_b))
    stories = len(groups_b)
    print(f"a/b = {naive / indexed:.1f}x; {stories} stories; same groups: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
