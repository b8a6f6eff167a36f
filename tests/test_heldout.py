"""The rules on text they were not written from, through the real command line.

Sets C to K (tests/fixtures/heldout/README.md) were written from the labelling guide alone,
before their scores were read. Sets C, E, G, I, J and K were tuned on afterwards with dev and tune; sets D,
F and H were kept as measures (their errors never read while writing rules). The floors sit a little below the
figures measured when the rules were last changed (README, "Figures"): a rule that learns
one item's wording instead of a definition, or an engine change that loses a mechanism
(morphology, elisions, unless contexts, yardsticks), brings one of them down.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HELDOUT = REPO / "tests" / "fixtures" / "heldout"
TOPICS = ("meta_ai", "rgpd", "ai_act", "media_partnership")

# name: (items, macro-F1 floor, per-topic F1 floor)
FLOORS = {
    # Tuned sets: floors a little below what the sixth round reached (C 0.995, E 1.000, G 0.993, I 0.997,
    # J 0.994, K 1.000; no topic below 0.98), one error of margin per topic.
    "set_c.jsonl": (149, 0.98, 0.95),
    "set_d.jsonl": (123, 0.97, 0.95),
    # Tuned on in issue 15's third round (1.000 after it, 0.927 before).
    "set_e.jsonl": (140, 0.98, 0.95),
    # A measure: 0.912 before and after the third round (meta_ai 0.87, rgpd 0.85), 0.933 after the
    # fourth (0.93, 0.88), 0.947 after the fifth (0.93, 0.905).
    "set_f.jsonl": (120, 0.93, 0.88),
    # A measure written for issue 15's fifth round (one realistic morning's mix; errors never read):
    # 0.951 before the round, 0.961 mid-way and at its end (meta_ai 0.94, ai_act 0.94).
    "set_h.jsonl": (150, 0.95, 0.92),
    # Tuned on in issue 15's fourth round (0.880 before it, 0.975 after it, 0.993 after the fifth).
    "set_g.jsonl": (150, 0.98, 0.95),
    # Tuned on in issue 15's fifth round (0.871 and 0.935 before it): data protection and the AI Act
    # in indirect words, their evidence split between title and lead (I); Meta's AI and press deals
    # told indirectly, roundups with a substantial paragraph or a passing line (J).
    # After it: I 0.976 (rgpd 0.90), J 0.990; after the sixth: I 0.997 (rgpd 0.99), J 0.994.
    "set_i.jsonl": (150, 0.98, 0.95),
    "set_j.jsonl": (150, 0.98, 0.95),
    # Tuned on in issue 15's fifth round (0.944 before it, 1.000 after): near-misses of every topic, for precision.
    "set_k.jsonl": (150, 0.98, 0.95),
}
# Sets written for some topics hold fewer items of the others (the least a topic has in them).
FEWEST = {"set_i.jsonl": 8, "set_j.jsonl": 12}
# A set written for precision holds more items with no topic (near-misses) than the others; set H,
# a morning's mix, 43 %.
MOST_EMPTY = {"set_k.jsonl": 0.5, "set_h.jsonl": 0.45}


def scores(output: str) -> tuple[int, float, dict[str, float]]:
    """Items, macro-F1 and F1 per topic from `pipeline evaluate FILE`'s table."""
    items = int(re.search(r": (\d+) items", output).group(1))  # type: ignore[union-attr]
    macro = float(re.search(r"^macro-F1\s+([\d.]+)", output, re.M).group(1))  # type: ignore[union-attr]
    per_topic = {m.group(1): float(m.group(2))
                 for m in re.finditer(r"^(\w+)\s+\d+\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+\s+([\d.]+)$", output, re.M)}
    return items, macro, per_topic


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_held_out_sets_through_the_cli(name: str, run_cli) -> None:
    count, macro_floor, topic_floor = FLOORS[name]
    result = run_cli("evaluate", HELDOUT / name, "--topics", REPO / "topics.yaml")
    assert result.code == 0, result.err
    items, macro, per_topic = scores(result.out)
    assert items == count
    assert set(per_topic) == set(TOPICS), result.out
    assert macro >= macro_floor, result.out
    assert all(f1 >= topic_floor for f1 in per_topic.values()), result.out


def test_held_out_sets_are_labelled_by_the_guide() -> None:
    # Each set holds every topic, multi-label items and about a third of items with no topic (traps).
    import json

    for name in FLOORS:
        rows = [json.loads(line) for line in (HELDOUT / name).read_text(encoding="utf-8").splitlines() if line]
        assert len({row["id"] for row in rows}) == len(rows)
        labels = [set(row["labels"]) for row in rows]
        assert all(label <= set(TOPICS) for label in labels)
        assert all(sum(topic in label for label in labels) >= FEWEST.get(name, 15) for topic in TOPICS), name
        assert sum(len(label) > 1 for label in labels) >= 4, name
        assert 0.25 <= sum(not label for label in labels) / len(rows) <= MOST_EMPTY.get(name, 0.42), name
