"""Compose stage: from the classified items of a window, decide what an issue says.

Picks the items of the issue's window, merges the same story told by several outlets,
ranks stories, chooses the lead, the menu, the sections, the agenda and further reading,
and prepares each story's text (kicker, opening sentence, summary cut at a sentence).
Nothing here renders or touches storage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import itertools
import math
import re
import zoneinfo
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.models import (
    AgendaEntry,
    EditorialDecision,
    Issue,
    Item,
    MenuTeaser,
    NewsletterSettings,
    Section,
    SourceRef,
    StoredItem,
    Story,
    TopicInfo,
)
from pipeline.text import fold

MONTHS_FR = {
    "janvier": 1, "fevrier": 2, "mars": 3, "avril": 4, "mai": 5, "juin": 6, "juillet": 7, "aout": 8,
    "septembre": 9, "octobre": 10, "novembre": 11, "decembre": 12,
}

# Words too common in French tech news to say two items tell the same story.
_STOPWORDS = frozenset("""
a au aux avec ce ces cet cette dans de des du elle en est et il ils la le les leur leurs mais
ne ni nous on ou par pas plus pour qu que qui sa se ses son sont sur un une vos votre vous y
ete etre fait faire avoir peut doit deja aussi comme entre apres avant depuis sans sous tout
tous toute toutes tres bien encore selon alors ainsi dont cela leurs meme autre autres lors
the of and to in for on with is are be by this that from at as it an or its was will has have
annonce annoncee nouveau nouvelle nouvelles nouveaux jour jours semaine mois annee ans selon
""".split())

# Words that start a French clause in lower case after a colon; anything else (Meta, CNIL,
# Bruxelles…) may be a proper noun and keeps its capital.
_LOWER_STARTERS = frozenset("""
le la les l un une des du de d ce ces cet cette ceci cela ca ceux celles celui celle chaque aucun
aucune plusieurs certains certaines son sa ses leur leurs mon ma mes
notre nos votre vos il ils elle elles on nous vous chacun chacune tout tous toute toutes
plus moins depuis des a au aux en dans pour par sur sous avant apres jusqu jusqu'au entre selon
quand comment pourquoi que qui quoi ou et mais donc or ni car si
prochaine prochain premiere premier derniere dernier nouvelle nouveau date fin debut entree
ouverture cloture lancement publication contributions obligations
""".split())

# A clause starting with one of these ("Après LlamaCon, …") can stand as a kicker.
_INTRO_WORDS = frozenset("""
apres avant face depuis pour selon malgre sans dans chez contre entre sur sous vers avec
en au aux a des outre hors
""".split())

# Abbreviations whose full stop does not end a sentence.
_ABBREVIATIONS = frozenset("m mm mme mmes mlle dr pr me art cf p pp vol no n° st ste av bd env ex".split())

_WORD_RE = re.compile(r"[a-z0-9]+")
_BOUNDARY_RE = re.compile(r"[.!?…]+(?:\s?[»\"”)])?\s+(?=[«\"“(]?\s?[A-ZÀ-ÖØ-Þ0-9])")
_TERMINAL = ".!?…"
# French typography that lies in the characters themselves (render adds the spaces): the
# apostrophe ’, the ellipsis …, guillemets « » for straight or English double quotes.
_STRAIGHT_APOSTROPHE_RE = re.compile(r"(?<=\w)'")
_ELLIPSIS_RE = re.compile(r"\.{3,}|\. \. \.")
_QUOTED_RE = re.compile(r"\"\s*([^\"]+?)\s*\"|“\s*([^“”]+?)\s*”")


def french_characters(text: str) -> str:
    """"L'IA" → "L’IA", "..." → "…", "\"moteurs\"" and “moteurs” → « moteurs »."""
    if "'" in text:
        text = _STRAIGHT_APOSTROPHE_RE.sub("’", text)
    if "..." in text or ". . ." in text:
        text = _ELLIPSIS_RE.sub("…", text)
    if '"' in text or "“" in text:
        text = _QUOTED_RE.sub(lambda m: f"« {m.group(1) or m.group(2)} »", text)
    return text


def issue_window(date: dt.date, settings: NewsletterSettings) -> tuple[dt.datetime, dt.datetime]:
    """The 24 hours before the issue time of `date`, in UTC: [start, end)."""
    zone = zoneinfo.ZoneInfo(settings.timezone)
    end_local = dt.datetime.combine(date, settings.issue_time, tzinfo=zone)
    start_local = dt.datetime.combine(date - dt.timedelta(days=1), settings.issue_time, tzinfo=zone)
    return start_local.astimezone(dt.UTC), end_local.astimezone(dt.UTC)


# ---------------------------------------------------------------- text helpers


def split_sentences(text: str) -> list[str]:
    """Sentences of a cleaned text; "M. Dupont", "art. 6" and initials do not end one."""
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY_RE.finditer(text):
        before = text[start : match.start()].rsplit(maxsplit=1)
        last_word = re.split(r"[’'(«]", before[-1])[-1] if before else ""
        if match.group(0)[0] == "." and (fold(last_word) in _ABBREVIATIONS or
                                         (len(last_word) == 1 and last_word.isupper())):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _ends_sentence(text: str) -> bool:
    return text.rstrip(" »\"”)")[-1:] in _TERMINAL


def _cut_at_word(text: str, limit: int) -> str:
    """At most `limit` characters ending with "…", cut between words, never inside an open
    quotation and never on a dangling article or preposition."""
    cut = text.rfind(" ", 0, max(limit - 1, 1))
    head = text[: cut if cut > 0 else max(limit - 1, 1)]
    while True:
        head = head.rstrip(" ,;:-–—(«\"'’")
        if head.count("«") > head.count("»"):
            head = head[: head.rfind("«")]
            continue
        words = head.rsplit(maxsplit=1)
        if len(words) == 2 and (fold(words[1]).rstrip("’'") in _LOWER_STARTERS or words[1].endswith(("’", "'"))):
            head = words[0]
            continue
        break
    return head + "…" if head else text[: max(limit - 1, 1)] + "…"


def cut_at_sentence(text: str, limit: int) -> str:
    """Whole sentences of a cleaned `text` up to `limit` characters.

    A last fragment without a full stop (a summary truncated by the feed, a link label such as
    "Tout notre dossier") is dropped when a whole sentence precedes it; a first sentence longer
    than `limit` is cut between words and ends with "…".
    """
    if not text:
        return ""
    sentences = split_sentences(text)
    if len(sentences) > 1 and not _ends_sentence(sentences[-1]):
        sentences.pop()
    kept: list[str] = []
    for sentence in sentences:
        if len(" ".join([*kept, sentence])) > limit:
            break
        kept.append(sentence)
    if 1 < len(kept) < len(sentences) and kept[-1].rstrip(" »\"”)").endswith("?"):
        kept.pop()  # a question whose answer is cut off ("Et l'IA ?") reads as a mistake
    if not kept:
        return _cut_at_word(sentences[0], limit)
    text = " ".join(kept)
    return text if _ends_sentence(text) else text + "…"


def _as_sentence(text: str) -> str:
    """First letter in upper case, a final full stop unless it already ends like a sentence."""
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if _ends_sentence(text) else text + "."


def is_written_as_name(word: str, context: str) -> bool:
    """Whether `word` is a name by how it is written: capitals inside it ("CNIL", "TikTok"), or
    its capital kept somewhere in `context` other than at the start of a sentence or clause
    ("… l’IA de Meta")."""
    if any(ch.isupper() for ch in word[1:]):
        return True
    for sentence in split_sentences(context):
        tokens = re.split(r"[\s’'(«\"“]+", sentence)
        for previous, token in itertools.pairwise(tokens):
            if token.rstrip(".,;:!?…»\")”") == word and not previous.endswith((":", "—", "–")):
                return True
    return False


def lower_first(text: str, context: str | None = None) -> str:
    """Lower-case the first letter when the first word is a common French word (so a proper
    noun such as "Meta" or "CNIL" keeps its capital after a colon). With `context` (the text the
    words come from), a capitalised first word that `context` also writes in lower case, and
    never as a name, is a common word too: "Amende de 530 millions…" → "amende de 530
    millions…" when the article speaks of "l'amende"; "Bruxelles" keeps its capital."""
    first = re.split(r"[\s’',]", text, maxsplit=1)[0]
    if not first[:1].isupper():
        return text
    if (fold(first) in _LOWER_STARTERS and not first[1:2].isupper()) or (
            context is not None and re.search(rf"(?<!\w){re.escape(first.lower())}(?!\w)", context)
            and not is_written_as_name(first, context)):
        return text[:1].lower() + text[1:]
    return text


_SEPARATORS = (" : ", " — ", " – ", " | ", ": ")


def _split(title: str) -> tuple[str, str, bool]:
    """(first clause, rest, set apart by a colon or dash) of a cleaned title; rest is "" when the
    title has no clause that can stand alone as a kicker."""
    for separator in _SEPARATORS:
        if separator in title:
            first, rest = title.split(separator, 1)
            if 2 <= len(first.strip()) <= 60 and rest.strip():
                return first.strip(), rest.strip(), True
    if ", " in title:
        first, rest = title.split(", ", 1)
        words = first.split()
        if 2 <= len(words) <= 4 and fold(words[0]) in _INTRO_WORDS and len(rest.split()) >= 3:
            return first.strip(), rest.strip(), False
    return title, "", False


KICKER_WORDS = 6  # a kicker never has more words than this (Tech Matin's have 2 to 5)
DERIVED_KICKER_WORDS = 5  # a kicker taken from inside a title is cut to this many words


def _word_count(text: str) -> int:
    """Words of a text, lone punctuation ("-", "«") aside."""
    return len([w for w in text.split() if re.search(r"\w", w)])


def split_title(title: str, theme: str = "") -> tuple[str, str]:
    """(kicker, lede) of a title: the kicker, in capitals ending with a full stop, is at most
    KICKER_WORDS words; the lede is what the kicker leaves of the title, as a sentence, or ""
    when the kicker is the whole title.

    - the title's first clause when it is short: "IA de Meta : la CNIL détaille le droit
      d'opposition" → ("IA DE META.", "La CNIL détaille …"), "Après LlamaCon, Meta ouvre une API"
      → ("APRÈS LLAMACON.", "Meta ouvre une API.");
    - a long first clause with a short one after the colon: the short one, "Refuser que vos posts
      nourrissent l'IA de Meta : le mode d'emploi pas à pas" → ("LE MODE D'EMPLOI PAS À PAS.",
      "Refuser que vos posts nourrissent l'IA de Meta.");
    - a short title is the kicker alone;
    - otherwise the whole title is the lede and the kicker a few words of it (see short_kicker):
      "Un groupe de presse régionale ouvre quarante ans d'archives à une start-up d'IA" →
      ("GROUPE DE PRESSE RÉGIONALE.", "Un groupe de presse régionale ouvre …").
    """
    first, rest, apart = _split(title)
    if rest and _word_count(first) <= KICKER_WORDS:
        return _kicker(first), _as_sentence(rest)
    if apart and 2 <= _word_count(rest) <= KICKER_WORDS:
        return _kicker(rest), _as_sentence(first)
    if _word_count(title) <= KICKER_WORDS:
        return _kicker(title), ""
    return _kicker(short_kicker(title, theme)), _as_sentence(title)


def _kicker(text: str) -> str:
    head = text.strip().rstrip(" .!?…:;,-–—«»\"'”’").lstrip(" «\"'“")
    return head.upper() + "." if head else ""


def make_kicker(title: str, theme: str = "") -> str:
    """An upper-case kicker of at most KICKER_WORDS words ending with a full stop (see split_title)."""
    return split_title(title, theme)[0]


# Words that tell where a title's noun phrase ends (see _noun_phrase): auxiliaries and frequent
# verbs, and words opening a clause.
_VERB_WORDS = frozenset("""
est sont etait etaient sera seront serait seraient a ont avait avaient aura auront aurait auraient
va vont fait font peut peuvent pourrait pourraient doit doivent devra devront veut veulent devient
deviennent reste restent semble semblent vient viennent
is are was were will would has have had can could may might should must
se s ne n qui que qu dont ou lorsque quand car mais selon
""".split())
# ... and what follows a verb: an article, a possessive, a number ("ouvre quarante ans d'archives").
_OBJECT_STARTERS = frozenset("""
le la les l un une ses son sa leur leurs ce cet cette ces notre nos votre vos plusieurs
the a an its their his her
deux trois quatre cinq six sept huit neuf dix onze douze quinze vingt trente quarante cinquante
soixante cent mille
""".split())
_ARTICLES = frozenset("le la les l un une des".split())
_POSSESSIVES = frozenset("son sa ses leur leurs notre nos votre vos its their his her".split())
_CONJUNCTIONS = frozenset("et ou ni and or".split())
_ELIDED_CLITICS = frozenset("s n qu j m t".split())
_PREPOSITIONS = frozenset("""
de du des d a au aux en dans sur pour par avec chez contre entre pres face apres avant sans sous vers
malgre selon depuis pendant lors via parmi outre afin grace
of for in on at to with from by
""".split())
# Between a verb and its object: negation, adverbs, participles of a compound tense.
_VERB_GROUP = frozenset("""
pas plus aussi deja desormais encore bien toujours enfin vraiment jamais meme ainsi egalement
""".split())
_PARTICIPLE_RE = re.compile(r"(?:e|ee|es|ees|is|it|u|ue|us|ues|ert|erte)$")


def _bare(token: str) -> str:
    return token.strip("«»\"“”()[],;:.!?…")


def _noun_phrase(tokens: Sequence[str], start: int) -> tuple[list[str], int | None]:
    """The noun phrase opening tokens[start:] and the index of the verb that ends it, if a verb
    does: it ends at a word opening a clause, an auxiliary, a reflexive verb ("s'écrase"), a word
    followed by an article or a number (a verb: "ouvre quarante ans…"), or a comma (no verb)."""
    words: list[str] = []
    index = start
    while index < len(tokens):
        token = tokens[index]
        bare = _bare(token)
        folded = fold(bare)
        head = re.split(r"[’']", folded, maxsplit=1)[0]
        opening_article = index == start and head in _OBJECT_STARTERS  # "a" is English's, not "il a"
        if not opening_article and (folded in _VERB_WORDS or (head != folded and head in _ELIDED_CLITICS)
                                    or re.search(r"-(?:t-)?(?:il|elle|ils|elles|on)$", folded)):
            return words, index  # "s'écrase", "n'est", "qu'il", "j'ai", "est-il"
        if index > start and bare[:1].islower() and head == folded and index + 1 < len(tokens) \
                and folded not in _PREPOSITIONS | _OBJECT_STARTERS | _CONJUNCTIONS:
            after = fold(_bare(tokens[index + 1]))
            # "a"/"à" opens no object: "renonce à", "le groupe a annoncé" (the auxiliary ends it anyway)
            if (after != "a" and re.split(r"[’']", after, maxsplit=1)[0] in _OBJECT_STARTERS) or \
                    (re.fullmatch(r"\d+(?:[.,]\d+)?", after) and folded not in MONTHS_FR):
                return words, index  # "ouvre" in "… régionale ouvre quarante ans d'archives"
        if bare:
            words.append(bare)
        index += 1
        if token.rstrip("»\"”)").endswith((",", ";", ":", "?", "!", ".")):
            break
    return words, None


def _is_preposition(word: str, elided: bool = True) -> bool:
    """"de", "à", "jusqu'à"…, and with `elided` a word after "d'" ("d'archives"), before which
    a phrase can be cut but which is no dangling preposition at its end."""
    folded = fold(word)
    head = re.split(r"[’']", folded, maxsplit=1)[0]
    return folded in _PREPOSITIONS or head == "jusqu" or (elided and head == "d" and head != folded)


def _telling(word: str) -> bool:
    """A word that says something by itself (not an article, a preposition, a pronoun…)."""
    return (len(word) > 2 and fold(word) not in _LOWER_STARTERS | _STOPWORDS | _PREPOSITIONS) or word[:1].isdigit()


def _trimmed(words: Sequence[str]) -> list[str]:
    """A noun phrase cut to DERIVED_KICKER_WORDS words, before a preposition when what is left
    still says two things ("Le désarroi des parents face à…" → "désarroi des parents"), without
    an article, a possessive or a preposition dangling at its end, nor an article or a
    possessive at its start."""
    kept = list(words)
    if len(kept) > DERIVED_KICKER_WORDS:
        cuts = [i for i in range(1, DERIVED_KICKER_WORDS + 1)
                if _is_preposition(kept[i]) and sum(map(_telling, kept[:i])) >= 2]
        kept = kept[: cuts[-1]] if cuts else kept[:DERIVED_KICKER_WORDS]
    while kept and (_is_preposition(kept[-1], elided=False) or fold(kept[-1]) in _ARTICLES | _LOWER_STARTERS
                    or kept[-1].endswith(("’", "'"))):
        kept.pop()
    if len(kept) > 1 and fold(kept[0]) in _ARTICLES | _POSSESSIVES:
        kept.pop(0)
    elif kept and re.match(r"^[lL][’'].", kept[0]):
        kept[0] = kept[0][2:]
    return kept


def _says_something(words: Sequence[str]) -> bool:
    return any(map(_telling, words))


_AND = ("et", "&", "and")


def _name_runs(tokens: Sequence[str]) -> list[list[str]]:
    """Runs of capitalised words past a title's first word, joined by "et": "Meta et Reuters",
    "Jean-Pierre Filiu"."""
    runs: list[list[str]] = []
    open_run = False  # the word before is a name, or "et" after one
    for position, token in enumerate(tokens):
        bare = re.sub(r"^[dlDL][’']", "", _bare(token))
        if position > 0 and bare[:1].isupper() and fold(bare) not in _LOWER_STARTERS:
            if open_run:
                runs[-1].append(bare)
            else:
                runs.append([bare])
            open_run = not token.endswith((",", ";", ":"))
        elif open_run and fold(bare) in _AND and fold(runs[-1][-1]) not in _AND:
            runs[-1].append(bare)
        else:
            open_run = False
    return [run[:-1] if fold(run[-1]) in _AND else run for run in runs]


def _object(tokens: Sequence[str], verb: int) -> list[str]:
    """What the verb at tokens[verb] bears on, when an article, a possessive or a number says
    where it starts: "se lance dans la réforme de l'islam" → "réforme de l'islam", "dénonce une
    « volonté politique de minorer… »" → "volonté politique"; [] when unsure."""
    index = verb + 1
    prepositions = 0
    while index < len(tokens):
        word = fold(_bare(tokens[index]))
        head = re.split(r"[’']", word, maxsplit=1)[0]
        if head in _OBJECT_STARTERS:
            return _trimmed(_noun_phrase(tokens, index)[0])
        if head != word and head in _ELIDED_CLITICS:
            return []  # another verb ("renonce à s'émanciper de…"): not a noun phrase of this one
        if word in _PREPOSITIONS:
            prepositions += 1
        elif not (word in _VERB_WORDS | _VERB_GROUP or _PARTICIPLE_RE.search(word)):
            return []
        if prepositions > 1:
            return []
        index += 1
    return []


def short_kicker(title: str, theme: str = "") -> str:
    """A few words of a title without a short head, for its kicker (at most
    DERIVED_KICKER_WORDS): its subject without its article ("Un groupe de presse régionale
    ouvre…" → "groupe de presse régionale"); when the lede would open with the same words (a
    name: "Louis Gallois dénonce une « volonté politique… »"), what the verb bears on ("volonté
    politique", see _object), else `theme`, else the subject all the same; a title whose opening is no noun
    phrase ("Ce que l'on sait de l'accord entre Meta et Reuters") gives the names it holds ("Meta
    et Reuters"), else `theme`, else its first words."""
    # A rubric tag ("[Brève]", "[MàJ]") says nothing of the story.
    tokens = re.sub(r"^\[[^\]]{1,20}\]\s*", "", title).replace("« ", "«").replace(" »", "»").split()
    subject, verb = _noun_phrase(tokens, 0)
    kept = _trimmed(subject)
    if _says_something(kept):
        if kept[:1] != subject[:1]:
            return " ".join(kept)  # the article gone, the lede does not open with the kicker
        bears_on = _object(tokens, verb) if verb is not None else []
        return " ".join(bears_on) if _says_something(bears_on) else theme or " ".join(kept)
    names = max(_name_runs(tokens), key=lambda run: len(run), default=[])
    if 0 < len(names) <= DERIVED_KICKER_WORDS:
        return " ".join(names)
    return theme or " ".join(_trimmed(tokens))


def _is_generic_title(title: str, reused: bool) -> bool:
    """A rubric name such as "En bref" or "La revue du jour" says nothing of the story."""
    if reused:
        return True
    words = title.split()
    return len(words) <= 2 and not any(ch.isdigit() for ch in title) and all(w.islower() for w in words[1:])


# ---------------------------------------------------------------- clustering


@dataclass
class _Doc:
    """An item as clustering sees it: its words once its feed's boilerplate is left out."""

    entry: StoredItem
    words: frozenset[str]
    title_words: frozenset[str]
    title_key: str
    score: float
    topics: frozenset[str] = frozenset()
    when: dt.datetime | None = None
    weight: float = 0.0  # the IDF weight of all its words, set once the window's IDF is known


def _content_words(tokens: Iterable[str]) -> frozenset[str]:
    return frozenset(w for w in tokens if (len(w) > 3 or w.isdigit()) and w not in _STOPWORDS)


def _words(text: str) -> frozenset[str]:
    return _content_words(_WORD_RE.findall(fold(text)))


# Thresholds of `_Window.similarity`, measured on the 81 bundled demo items (examples/, labels in
# tests/fixtures/demo_labels.json): pairs of different stories published within 48 h share at most
# 0.25 of the smaller item's IDF weight, so two items are linked from 0.34; the four outlets of the
# Meta story link at 0.36 to 0.42 and make two pairs whose four cross pairs average 0.21. A group
# therefore takes in an item (or another group) when a pair across them is linked and the average
# over every pair across them is at least a weak link (0.17): one bridge never ties two stories.
SHARED_WEIGHT_MIN = 0.34
SHARED_WORDS_MIN = 4
WEAK_LINK = SHARED_WEIGHT_MIN / 2  # below this two items are unrelated (similarity 0)
GROUP_AVERAGE_MIN = WEAK_LINK
TITLE_SIMILAR_MIN = 88.0  # rapidfuzz token_set_ratio of the folded titles
SAME_STORY_SPAN = dt.timedelta(hours=48)
# An item that repeats the headlines of this many stories unrelated to one another is a roundup
# ("la semaine en bref"): it stays out of the groups, or it would tie them all together.
ROUNDUP_STORIES = 3
# A run of this many words found in two items of one feed is the feed's boilerplate ("article de
# nos confrères…, repris avec leur accord", a newsletter's footer), not what an item says.
BOILERPLATE_RUN = 6
# Words in more items than this are too common to find candidate pairs with (see candidate_pairs).
RARE_WORD_ITEMS = 50


@dataclass(frozen=True)
class StoryGroups:
    """Items grouped by story, each group best item first (dated before undated), and the ids of
    roundups: items that sum up several unrelated stories, each kept in a group of its own."""

    groups: tuple[tuple[StoredItem, ...], ...]
    roundups: frozenset[str]


def _boilerplate_runs(token_lists: Sequence[tuple[str, list[str]]]) -> set[tuple[str, ...]]:
    """Runs of BOILERPLATE_RUN words that two or more items of one feed share."""
    by_feed: dict[str, Counter[tuple[str, ...]]] = {}
    for feed_id, tokens in token_lists:
        runs = {tuple(tokens[i : i + BOILERPLATE_RUN]) for i in range(len(tokens) - BOILERPLATE_RUN + 1)}
        by_feed.setdefault(feed_id, Counter()).update(runs)
    return {run for counts in by_feed.values() for run, n in counts.items() if n >= 2}


def _without_runs(tokens: list[str], runs: set[tuple[str, ...]]) -> list[str]:
    """`tokens` less every word inside one of `runs`."""
    if not runs:
        return tokens
    covered = [False] * len(tokens)
    for i in range(len(tokens) - BOILERPLATE_RUN + 1):
        if tuple(tokens[i : i + BOILERPLATE_RUN]) in runs:
            covered[i : i + BOILERPLATE_RUN] = [True] * BOILERPLATE_RUN
    return [t for t, hidden in zip(tokens, covered, strict=True) if not hidden]


class _Window:
    """The items to group, with what the whole window says about words: how rare each is (IDF)
    and which runs of words are some feed's boilerplate."""

    def __init__(self, entries: Sequence[StoredItem], background: Sequence[StoredItem],
                 source_weights: Mapping[str, float]):
        mine = {e.item.id for e in entries}
        everything = [*entries, *(e for e in background if e.item.id not in mine)]
        summaries = [(e.item.feed_id, _WORD_RE.findall(fold(e.item.summary))) for e in everything]
        runs = _boilerplate_runs(summaries)
        words = [_content_words([*_WORD_RE.findall(fold(e.item.title)), *_without_runs(tokens, runs)])
                 for e, (_, tokens) in zip(everything, summaries, strict=True)]
        document_frequency: Counter[str] = Counter()
        for item_words in words:
            document_frequency.update(item_words)
        total = len(everything)
        self.idf = {w: math.log((1 + total) / (1 + n)) + 1.0 for w, n in document_frequency.items()}
        self.docs = [
            _Doc(
                entry=e, words=item_words, title_words=_words(e.item.title), title_key=fold(e.item.title),
                score=max(e.classification.scores.values(), default=0.0) * source_weights.get(e.item.feed_id, 1.0),
                topics=frozenset(e.classification.topics), when=e.item.published or e.item.first_seen,
                weight=math.fsum(self.idf[w] for w in item_words),
            )
            for e, item_words in zip(entries, words, strict=False)
        ]

    def similarity(self, a: _Doc, b: _Doc) -> float:
        """How surely `a` and `b` tell the same story, from 0 (unrelated) to 1 (one link): the IDF
        weight of the words they share over the smaller item's, words rare in the window counting
        most. At least SHARED_WEIGHT_MIN means the same story; below WEAK_LINK it is 0."""
        item_a, item_b = a.entry.item, b.entry.item
        if (item_a.url and item_a.url == item_b.url) or (item_a.guid and item_a.guid == item_b.guid):
            return 1.0
        if item_a.feed_id == item_b.feed_id:
            # An outlet does not carry the same story twice a day, but it may reuse one title for
            # different stories ("En bref"), so only identical links or guids merge here.
            return 0.0
        if a.topics.isdisjoint(b.topics):
            return 0.0
        if a.when and b.when and abs(a.when - b.when) > SAME_STORY_SPAN:
            return 0.0  # outlets cover one event within a day or two; later pieces are follow-ups
        shared = a.words & b.words
        smaller = min(a.weight, b.weight)
        overlap = math.fsum(self.idf[w] for w in shared) / smaller if smaller > 0 else 0.0
        if overlap < WEAK_LINK:
            return 0.0
        if overlap >= SHARED_WEIGHT_MIN and len(shared) >= SHARED_WORDS_MIN:
            return overlap
        # Two outlets with (nearly) one headline: the same story only if their texts agree too,
        # since a title alone is not enough ("En bref", "La revue du jour" cover different stories).
        from rapidfuzz import fuzz  # here: a run that composes nothing does not load it

        if (a.title_words and b.title_words and len(shared - a.title_words - b.title_words) >= 2
                and fuzz.token_set_ratio(a.title_key, b.title_key) >= TITLE_SIMILAR_MIN):
            return max(overlap, SHARED_WEIGHT_MIN)
        return overlap if len(shared) >= SHARED_WORDS_MIN else 0.0

    def candidate_pairs(self) -> set[tuple[int, int]]:
        """The pairs of items worth comparing, found through an inverted index of rare words
        rather than by comparing every pair: those sharing at least two words that each stand in
        at most RARE_WORD_ITEMS items, plus those with the same link or guid. A pair of tellings
        of one story shares several such words (names, figures, the story's own words), while a
        pair sharing one rare word and otherwise only common ones never reaches WEAK_LINK in
        practice; and leaving common words out of the index bounds the work by RARE_WORD_ITEMS
        per word of the window, so it grows linearly with the window instead of with its square."""
        docs = self.docs
        postings: dict[str, list[int]] = {}
        for index, doc in enumerate(docs):
            for word in doc.words:
                postings.setdefault(word, []).append(index)
        rare = [indices for indices in postings.values() if 1 < len(indices) <= RARE_WORD_ITEMS]
        shared_with: list[Counter[int]] = [Counter() for _ in docs]
        for indices in rare:
            for position, index in enumerate(indices):
                shared_with[index].update(indices[position + 1 :])  # postings are in index order
        pairs = {(index, other) for index, counts in enumerate(shared_with)
                 for other, shared in counts.items() if shared >= 2}
        for key in ("url", "guid"):
            same: dict[str, list[int]] = {}
            for index, doc in enumerate(docs):
                value = getattr(doc.entry.item, key)
                if value:
                    same.setdefault(value, []).append(index)
            for indices in same.values():
                pairs.update(itertools.combinations(indices, 2))
        return pairs

    def links(self, all_pairs: bool = False) -> dict[tuple[int, int], float]:
        """The similarity of every related pair (i < j); `all_pairs` compares every pair instead
        of the candidates, for tests and benchmarks (same result, quadratic time)."""
        pairs = (itertools.combinations(range(len(self.docs)), 2) if all_pairs
                 else sorted(self.candidate_pairs()))
        found = {}
        for i, j in pairs:
            value = self.similarity(self.docs[i], self.docs[j])
            if value > 0:
                found[(i, j)] = value
        return found


def _roundups(window: _Window, links: Mapping[tuple[int, int], float]) -> set[int]:
    """Items that repeat the headlines of ROUNDUP_STORIES or more stories unrelated to one another
    ("la semaine en bref"): each of those stories' items is smaller than the roundup and at least
    half of its title's weight is found in the roundup."""
    docs = window.docs

    def sums_up(big: int, small: int) -> bool:
        head, whole = docs[small].title_words, docs[big].words
        title_weight = math.fsum(window.idf.get(w, 0.0) for w in head)
        return (docs[small].weight <= docs[big].weight and title_weight > 0
                and math.fsum(window.idf.get(w, 0.0) for w in head & whole) >= title_weight / 2)

    neighbours: dict[int, set[int]] = {}
    for i, j in links:
        neighbours.setdefault(i, set()).add(j)
        neighbours.setdefault(j, set()).add(i)
    found = set()
    for index, around in neighbours.items():
        summed = {other for other in around if sums_up(index, other)}
        # Count the stories among them: items related through one another are one story.
        stories = 0
        while summed and stories < ROUNDUP_STORIES:
            stories += 1
            frontier = [summed.pop()]
            while frontier:
                reached = neighbours[frontier.pop()] & summed
                summed -= reached
                frontier.extend(reached)
        if stories >= ROUNDUP_STORIES:
            found.add(index)
    return found


def _average_linkage(size: int, links: Mapping[tuple[int, int], float]) -> list[list[int]]:
    """Groups of items, merged best pair first while two groups hold a linked pair
    (SHARED_WEIGHT_MIN) and their average similarity over every pair across them reaches
    GROUP_AVERAGE_MIN (unrelated pairs count 0): each member is close to the whole group."""
    members: dict[int, list[int]] = {i: [i] for i in range(size)}
    version = [0] * size  # bumped when a group grows, so that older merge proposals are dropped
    # between[a][b]: (sum, best) of the similarities of the pairs across groups a and b
    between: dict[int, dict[int, tuple[float, float]]] = {i: {} for i in range(size)}
    for (i, j), value in links.items():
        between[i][j] = between[j][i] = (value, value)
    heap: list[tuple[float, int, int, int, int]] = []

    def propose(a: int, b: int) -> None:
        total, best = between[a][b]
        average = total / (len(members[a]) * len(members[b]))
        if best >= SHARED_WEIGHT_MIN and average >= GROUP_AVERAGE_MIN:
            first, second = min(a, b), max(a, b)
            heapq.heappush(heap, (-average, first, second, version[first], version[second]))

    for i, j in sorted(links):
        propose(i, j)
    while heap:
        _, a, b, version_a, version_b = heapq.heappop(heap)
        if a not in members or b not in members or (version[a], version[b]) != (version_a, version_b):
            continue
        # b joins a: a group keeps the smaller index, so the result does not depend on merge order
        members[a].extend(members.pop(b))
        version[a] += 1
        for other, (total_b, best_b) in between.pop(b).items():
            del between[other][b]
            if other != a:
                total_a, best_a = between[a].get(other, (0.0, 0.0))
                between[a][other] = between[other][a] = (total_a + total_b, max(best_a, best_b))
        for other in sorted(between[a]):
            propose(a, other)
    return [sorted(group) for _, group in sorted(members.items())]


def group_stories(entries: Sequence[StoredItem], source_weights: Mapping[str, float],
                  window: Sequence[StoredItem] = (), all_pairs: bool = False) -> StoryGroups:
    """Group `entries` by the story they tell. `window` (the whole day's items, `entries` among
    them or not) tells which words are rare and which are a feed's boilerplate; `all_pairs`
    compares every pair of items instead of those sharing rare words (same result, slower)."""
    context = _Window(entries, window, source_weights)
    links = context.links(all_pairs)
    roundups = _roundups(context, links)
    kept = {pair: value for pair, value in links.items() if roundups.isdisjoint(pair)}
    groups = []
    for indices in _average_linkage(len(context.docs), kept):
        members = [context.docs[i] for i in indices]
        members.sort(key=lambda d: (d.entry.item.published is None, -d.score, d.entry.item.id))
        groups.append(tuple(d.entry for d in members))
    return StoryGroups(groups=tuple(groups),
                       roundups=frozenset(context.docs[i].entry.item.id for i in roundups))


def cluster(entries: Sequence[StoredItem], source_weights: Mapping[str, float],
            window: Sequence[StoredItem] = ()) -> list[list[StoredItem]]:
    """Group items telling the same story; each group is ordered best item first."""
    return [list(group) for group in group_stories(entries, source_weights, window).groups]


# ---------------------------------------------------------------- agenda

_WEEKDAYS = r"lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche"
_MONTHS = r"janvier|février|fevrier|mars|avril|mai|juin|juillet|août|aout|septembre|octobre|novembre|décembre|decembre"
_DAY = r"1er|[12]?\d|3[01]"
_DATE_RE = re.compile(
    r"(?<![\w/.,-])(?P<lead>(?:jusqu[’']au|avant le|au plus tard le|d[’']ici (?:au|le)|dès le|des le"
    r"|à partir du|a partir du|à compter du|a compter du|depuis le)\s+)?"
    rf"(?:(?:le|du)\s+)?(?:(?:{_WEEKDAYS})\s+)?"
    rf"(?:(?P<first>{_DAY})\s+(?:au|et)\s+(?:le\s+)?)?"
    rf"(?P<day>{_DAY})\s+(?P<month>{_MONTHS})(?:\s+(?P<year>20\d\d))?(?![\w’'])",
    re.IGNORECASE,
)
_MONTH_NAME_RE = re.compile(rf"(?:{_MONTHS})", re.IGNORECASE)
# After "jusqu'au", "avant le"…, a day-month more than this many days before the article is
# read as next year's; a closer one is the recent past ("prêt au plus tard le 2 mai" on 5 May).
FUTURE_LEAD_PAST_DAYS = 90
_DEADLINE_LEADS = ("jusqu", "avant", "au plus tard", "d'ici", "d’ici")
_FUTURE_LEADS = ("jusqu", "avant", "au plus tard", "d'ici", "d’ici", "dès", "des le", "à partir", "a partir",
                 "à compter", "a compter")


def _resolve(day: int, month: int, year: int | None, lead: str, reference: dt.date) -> dt.date | None:
    """The date meant by "le 2 août" written on `reference`: with a year, that year; after
    "jusqu'au", "à partir du"… the next such day; otherwise the nearest one (a May article's
    "publiée le 11 mars" is the past March, not the next one)."""
    try:
        if year is not None:
            return dt.date(year, month, day)
        options = [dt.date(reference.year + delta, month, day) for delta in (-1, 0, 1)]
    except ValueError:
        return None  # "31 juin", "29 février" in a common year
    nearest = min(options, key=lambda d: (abs((d - reference).days), d))
    if lead.startswith("depuis"):
        return max(d for d in options if d <= reference)
    if lead.startswith(_FUTURE_LEADS) and (reference - nearest).days > FUTURE_LEAD_PAST_DAYS:
        # "jusqu'au 15 janvier" written in May: next January, not one four months gone.
        return min(d for d in options if d >= reference)
    return nearest


def _clause_around(sentence: str, start: int, end: int) -> str:
    """The clause of `sentence` holding [start, end): split at ";" and " : ", so that a long
    sentence gives the part about the date."""
    bounds = [0]
    bounds += [m.end() for m in re.finditer(r"\s*(?:;|\s:|\s—)\s+", sentence)]
    left = max(b for b in bounds if b <= start)
    right_candidates = [m.start() for m in re.finditer(r"\s*(?:;|\s:|\s—)\s+", sentence) if m.start() >= end]
    right = min(right_candidates) if right_candidates else len(sentence)
    return sentence[left:right].strip()


@dataclass(frozen=True)
class _DateMention:
    date: dt.date
    clause: str  # the clause holding the date (the whole sentence for a title), as a sentence
    before: str  # what precedes the clause: the start of its sentence, else the sentence before
    deadline: bool = False  # said as a limit: "jusqu'au", "avant le", "au plus tard le", "d'ici au"


def _date_mentions(text: str, reference: dt.date, whole: bool = False) -> list[_DateMention]:
    found: list[_DateMention] = []
    if "&" not in text and not _MONTH_NAME_RE.search(text):
        return found  # most texts name no month (entities aside): spare them the sentence split
    previous = ""
    for sentence in split_sentences(text):
        for match in _DATE_RE.finditer(sentence):
            day_text = match["first"] or match["day"]
            day = 1 if day_text.lower() == "1er" else int(day_text)
            month = MONTHS_FR[fold(match["month"])]
            lead = (match["lead"] or "").lower().strip()
            when = _resolve(day, month, int(match["year"]) if match["year"] else None, lead, reference)
            if when is None:
                continue
            clause = sentence if whole else _clause_around(sentence, match.start(), match.end())
            start = sentence.find(clause)
            before = sentence[:start].strip() if start > 0 else previous
            if len(clause) > 200:
                clause = _cut_at_word(clause, 200)
            found.append(_DateMention(when, _as_sentence(clause), before, lead.startswith(_DEADLINE_LEADS)))
        previous = sentence
    return found


def find_dates(text: str, reference: dt.date, whole: bool = False) -> list[tuple[dt.date, str]]:
    """French dates in `text` with the clause they stand in (the whole sentence with `whole`, for
    titles). A date without a year is resolved against `reference` (see `_resolve`); vague
    periods ("d'ici à 2027", "en août") are not dates."""
    return [(m.date, m.clause) for m in _date_mentions(text, reference, whole)]


# A clause opening with one of these leans on words outside it ("elles seront entendues…",
# "ceux qui étaient déjà commercialisés…", "dont le texte…"); "il faut", "il y a" do not.
_LEANING_STARTERS = frozenset("""
il ils elle elles on ceux celles celui celle cela ca ceci qui que qu dont lequel laquelle lesquels
lesquelles ou son sa ses leur leurs y
""".split())
_IMPERSONAL_RE = re.compile(r"^il (?:faut|y a|y aura|reste|s[’']agit|suffit|est (?:possible|prévu|temps)|"
                            r"sera (?:possible|temps))\b", re.IGNORECASE)
# ... or holds a pronoun standing for something said before: "chacun peut s'y opposer", "il faut
# la faire avant le 27 mai".
_LEANING_INSIDE_RE = re.compile(r"(?<!\w)(?:[sndlj][’']y\b|(?:le|la|les) faire\b)", re.IGNORECASE)
_PLURAL_DETERMINERS = frozenset("les des ces leurs nos vos plusieurs certains certaines".split())
_SINGULAR_DETERMINERS = frozenset("le la un une ce cet cette son sa leur notre votre".split())
_REPLACEABLE = {"il": False, "elle": False, "ils": True, "elles": True, "celui": False, "celle": False,
                "ceux": True, "celles": True}  # pronoun: stands for a plural


def _first_word(text: str) -> str:
    return fold(re.split(r"[\s’',]", text.strip(), maxsplit=1)[0])


def _leaning(clause: str) -> int:
    """0 when `clause` stands on its own, 1 when a pronoun inside it points outside it, 2 when it
    opens with one."""
    if _first_word(clause) in _LEANING_STARTERS and not _IMPERSONAL_RE.match(clause):
        return 2
    return 1 if _LEANING_INSIDE_RE.search(clause) else 0


def _subject_phrase(text: str, plural: bool) -> str:
    """The noun phrase opening `text` when it can stand for a pronoun of that number: "Les
    organisations d’éditeurs de presse" in "Les organisations d’éditeurs de presse plaident…",
    "La CNIL", "Meta"; else ""."""
    words = text.split()
    if len(words) < 2:
        return ""
    first = fold(re.split(r"[’']", words[0])[0])
    if re.match(r"^[Ll][’']\w", words[0]) and not plural:
        phrase, index = words[:1], 1
    elif first in (_PLURAL_DETERMINERS if plural else _SINGULAR_DETERMINERS):
        phrase, index = words[:2], 2
    elif not plural and words[0][:1].isupper() and first not in _LOWER_STARTERS | _INTRO_WORDS:
        phrase, index = words[:1], 1  # a name: "Meta", "Bruxelles"
    else:
        return ""
    while index < len(words) and phrase[-1][-1:] not in ",;:":  # complements: "d’éditeurs de presse"
        word = words[index]
        if re.match(r"^[dD][’']\w", word):
            phrase.append(word)
            index += 1
        elif fold(word) in ("de", "du", "des") and index + 1 < len(words):
            phrase += words[index : index + 2]
            index += 2
        else:
            break
    return " ".join(phrase).rstrip(",;:.")


def _standalone(mention: _DateMention) -> str:
    """The mention's clause, with an opening pronoun replaced by what it stands for when the
    words before it name it: "Elles seront entendues le 15 mai" after "Les organisations
    d’éditeurs plaident…" → "Les organisations d’éditeurs seront entendues le 15 mai"."""
    clause = mention.clause
    pronoun = _first_word(clause)
    if pronoun not in _REPLACEABLE or _IMPERSONAL_RE.match(clause):
        return clause
    subject = _subject_phrase(mention.before, _REPLACEABLE[pronoun])
    if not subject:
        return clause
    return _as_sentence(f"{subject} {clause.split(maxsplit=1)[1]}")


def _title_theme(title: str) -> str:
    """The title's first clause when a colon or a dash sets it apart and it is short ("IA de
    Meta" in "IA de Meta : la CNIL détaille…"), else ""."""
    first, _, apart = _split(title)
    return first if apart and len(first.split()) <= 5 else ""


def _agenda_context(story: Story, clause: str) -> str:
    """An agenda line taken from a story's body, introduced by what the story is about unless the
    clause already names it: "IA de Meta : une opposition exprimée avant le 27 mai…"."""
    subject = _title_theme(story.title) or story.title
    if _words(subject) & _words(clause):
        return clause
    return f"{subject} : {lower_first(clause)}"


def _agenda_label(story: Story) -> str:
    """A few words saying what a far date is about, for the "Plus loin" line: the title's theme,
    else the title."""
    title = story.title.strip().rstrip(" .…")
    return _title_theme(title) or (title if len(title) <= 60 else _cut_at_word(title, 60))


AGENDA_DAYS = 60  # ORDRE DU JOUR: what is coming within this many days; later dates go to "Plus loin"
AGENDA_LATER = 4  # at most this many dates in "Plus loin"


def build_agenda(stories: Sequence[Story], entries: Mapping[str, StoredItem], issue_date: dt.date,
                 limit: int = 8) -> tuple[AgendaEntry, ...]:
    """Dated events and deadlines after the issue date, found in the issue's stories: those of
    the next AGENDA_DAYS days, each said by a line that stands on its own (of all the story's
    mentions of the date, one whose clause leans on no word outside it, else the story's title),
    then the later ones (`later`), with a few words each. A deadline reported by several outlets
    or stories of one topic appears once, from the best-ranked story."""
    from rapidfuzz import fuzz  # here: a run that composes nothing does not load it

    horizon = issue_date + dt.timedelta(days=AGENDA_DAYS)
    kept: list[tuple[AgendaEntry, str, str]] = []  # entry, primary topic, folded context
    for story in stories:
        # date -> (leaning, order, line, item) of each mention of it in the story's items
        mentions: dict[dt.date, list[tuple[int, int, str, Item]]] = {}
        for item_id in story.item_ids:
            item = entries[item_id].item
            reference = (item.published or item.first_seen or dt.datetime.combine(issue_date, dt.time(),
                         tzinfo=dt.UTC)).date()
            for field_name, field_text in (("title", item.title), ("summary", item.summary),
                                           ("content", item.content)):
                for mention in _date_mentions(field_text, reference, whole=field_name == "title"):
                    if mention.date <= issue_date:
                        continue
                    clause = _standalone(mention)
                    line = clause if field_name == "title" else _agenda_context(story, clause)
                    found = mentions.setdefault(mention.date, [])
                    found.append((_leaning(clause), len(found), line, item))
        for when, found in sorted(mentions.items()):
            leaning, _, context, item = min(found, key=lambda m: (m[0], m[1]))
            later = when > horizon
            if later:
                context = _agenda_label(story)
            elif leaning:
                context = _as_sentence(story.title)  # no clause stands alone: the story's title
            key = fold(context)
            duplicate = any(
                entry.date == when and (topic == story.primary_topic or fuzz.token_set_ratio(folded, key) >= 80)
                for entry, topic, folded in kept
            )
            if not duplicate:
                kept.append((AgendaEntry(date=when, context=context, source=item.source, url=item.url, later=later),
                             story.primary_topic, key))
    agenda = sorted((entry for entry, _, _ in kept), key=lambda a: (a.date, a.source, a.context))
    return (*[a for a in agenda if not a.later][:limit], *[a for a in agenda if a.later][:AGENDA_LATER])


# ---------------------------------------------------------------- stories


@dataclass(frozen=True)
class _Headline:
    kicker: str
    lede: str
    title: str  # what menus and further reading show
    body: str  # the summary
    more: str = ""  # the full text when the feed gives one, for a story given more room

    def text(self, limit: int, extended: bool = False) -> str:
        """What follows the kicker: the rest of the title as the opening sentence (so kicker and
        title are never said twice), then the summary, and with `extended` (or a summary too
        short to say much) the full text, cut at a sentence within `limit`."""
        body = self.body
        if self.more and (extended or len(body) < 160):
            body = f"{body} {self.more}".strip()
        text = f"{self.lede} {cut_at_sentence(body, limit)}".strip()
        return _paragraphs(text) if extended else text


PARAGRAPH_CHARS = 300  # a long text is broken into paragraphs of about this length


def _paragraphs(text: str) -> str:
    """Whole sentences grouped into paragraphs of about PARAGRAPH_CHARS, separated by a blank
    line ("\n\n"), so that a long lead reads as the seed's does rather than as one block."""
    paragraphs: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        current = f"{current} {sentence}".strip()
        if len(current) >= PARAGRAPH_CHARS:
            paragraphs.append(current)
            current = ""
    if current:
        if paragraphs and len(current) < PARAGRAPH_CHARS // 3:
            paragraphs[-1] = f"{paragraphs[-1]} {current}"  # no one-line paragraph at the end
        else:
            paragraphs.append(current)
    return "\n\n".join(paragraphs)


def _headline(entry: StoredItem, generic: bool, theme: str = "") -> _Headline:
    """The kicker, lede and texts of a story told by `entry`; `theme` (its topic's) is the kicker
    of a long title whose own words give none (see short_kicker)."""
    from rapidfuzz import fuzz  # here: a run that composes nothing does not load it

    item = entry.item
    title, body, content = item.title, item.summary, item.content
    if content and fold(content).startswith(fold(body)[:60]):
        body, content = content, ""  # the content repeats the summary, and says more
    if generic:
        # "En bref" says nothing: the body's first sentence becomes the headline.
        rubric = _kicker(title if _word_count(title) <= KICKER_WORDS else short_kicker(title, theme))
        sentences = split_sentences(body)
        if sentences and len(sentences[0]) <= 110:
            first = sentences[0]
            rest = " ".join(sentences[1:])
            return _Headline(kicker=rubric, lede=_as_sentence(first), title=first.rstrip(" .…"),
                             body=rest, more=content)
        return _Headline(kicker=rubric, lede="", title=title, body=body, more=content)
    kicker, lede = split_title(title, theme)
    sentences = split_sentences(body)
    # Some feeds open the summary with the headline again; say it once.
    if sentences and fuzz.ratio(fold(sentences[0]).rstrip(". "), fold(title)) >= 90:
        body = " ".join(sentences[1:])
    return _Headline(kicker=kicker, lede=lede, title=title, body=body, more=content)


# The rank of a story (Story.score) is
#   topic_confidence(best topic score) × outlet weight × (1 + OUTLET_BONUS × other outlets)
#   × (1 + news value) × (1 + FRESHNESS × freshness)
# The classifier's score says how surely an item is on topic, not how much it matters: it is
# turned into a confidence that is 2/3 at the default threshold (3) and near 1 for a sure item,
# so a sure item without news weighs at most about 1.5 times one just on topic, and the news
# value (at most NEWS_MAX) decides between them. Every factor but the confidence is at least 1
# and the confidence is 0 without a topic: nothing lifts an off-topic item, which never reaches
# compose's stories anyway.
TOPIC_HALF = 1.5  # the topic score whose confidence is one half
OUTLET_BONUS = 0.6  # each other outlet telling the story
FRESHNESS = 0.1  # freshness is 1 just published, 0 at 48 hours, 0 for an undated story


def topic_confidence(score: float) -> float:
    """How surely a story is on topic, from its best topic score: score / (score + TOPIC_HALF),
    in [0, 1)."""
    return score / (score + TOPIC_HALF) if score > 0 else 0.0


def _make_story(group: Sequence[StoredItem], topic_order: Sequence[str], source_weights: Mapping[str, float],
                settings: NewsletterSettings, window_end: dt.datetime, generic_ids: frozenset[str],
                topic_themes: Mapping[str, str] | None = None) -> Story:
    lead = group[0]
    best: dict[str, float] = {}
    total: dict[str, float] = {}
    for entry in group:
        for topic in entry.classification.topics:
            value = entry.classification.scores.get(topic, 0.0)
            best[topic] = max(best.get(topic, 0.0), value)
            total[topic] = total.get(topic, 0.0) + value
    topics = tuple(t for t in topic_order if t in best)
    # The topic most of the outlets file it under, not the lead item's alone.
    primary = max(topics, key=lambda t: (total[t], -topic_order.index(t)))
    outlets: dict[str, SourceRef] = {}
    for entry in group[1:]:
        if entry.item.source != lead.item.source:
            # An outlet that carries the lead's own article (a reprise) is named without a link:
            # "Également sur : X [1]" pointing at the source's page would read as a mistake.
            url = entry.item.url if entry.item.url != lead.item.url else None
            outlets.setdefault(entry.item.source, SourceRef(entry.item.source, url))
    published = lead.item.published or lead.item.first_seen
    # An undated item may be an evergreen page ("Glossaire"): no freshness bonus.
    dated = [e.item.published for e in group if e.item.published]
    if dated:
        hours_old = (window_end - max(dated)).total_seconds() / 3600
        recency = max(0.0, 1.0 - max(hours_old, 0.0) / 48.0)
    else:
        recency = 0.0
    weight = max(source_weights.get(e.item.feed_id, 1.0) for e in group)
    issue_date = window_end.astimezone(zoneinfo.ZoneInfo(settings.timezone)).date()
    news = max(news_value(e.item, issue_date) for e in group)
    score = round(topic_confidence(max(best.values())) * weight * (1 + OUTLET_BONUS * len(outlets)) * (1 + news)
                  * (1 + FRESHNESS * recency), 4)
    why = tuple(dict.fromkeys(m.text for e in group for m in e.classification.matches_for(primary)))[:5]
    headline = _headline(lead, lead.item.id in generic_ids, (topic_themes or {}).get(primary, ""))
    return Story(
        id=lead.item.id, kicker=headline.kicker, title=headline.title,
        text=headline.text(settings.summary_chars),
        url=lead.item.url, source=lead.item.source, topics=topics, primary_topic=primary, score=score,
        item_ids=tuple(e.item.id for e in group), also_on=tuple(outlets.values()), published=published,
        why=why,
    )



def _generic_ids(entries: Iterable[StoredItem]) -> frozenset[str]:
    """Items whose title is a rubric name: reused by their outlet within the day, or too short to
    say anything ("En bref")."""
    by_title: Counter[tuple[str, str]] = Counter((e.item.feed_id, fold(e.item.title).strip()) for e in entries)
    return frozenset(
        e.item.id for e in entries
        if _is_generic_title(e.item.title, by_title[(e.item.feed_id, fold(e.item.title).strip())] > 1)
    )


def _teaser(story: Story, topic_themes: Mapping[str, str], context: str = "") -> MenuTeaser:
    """An AU MENU line, `— Thème : phrase.`: the title's own short first clause as the theme and
    the rest as the phrase ("IA de Meta : la CNIL détaille…"), else the topic's theme and the
    title ("Intelligence artificielle : Meta ouvre une API…"). A first clause too long to be a
    theme but set apart by a colon says the news ("Amende de 530 millions contre TikTok : ce que
    dit la décision"): it is the phrase, the commentary after it is left out. `context` (what
    the story's items say) tells a common word from a name after the colon (see lower_first)."""
    theme = _title_theme(story.title)
    first, rest, apart = _split(story.title)
    if theme:
        phrase = rest
    else:
        theme = topic_themes[story.primary_topic]
        phrase = first if apart else rest if len(rest.split()) >= 5 else story.title
    phrase = lower_first(phrase.strip(), context=f"{story.title}. {story.text} {context}")
    phrase = phrase if _ends_sentence(phrase) else phrase + "."
    return MenuTeaser(theme=theme, text=phrase, story_id=story.id)


# Words of a title, and folders of a link, that say a page is meant to be read any day (a
# glossary, a FAQ, an explainer) rather than the day's news.
_EVERGREEN_TITLE_RE = re.compile(
    r"^comprendre\b|\b(?:glossaire|lexique|faq|foire aux questions|tout comprendre|explainer|what is|"
    r"qu.est.ce que|ce qu.il faut savoir|l.abc|guide pratique|"
    r"(?:en|\d+|deux|trois|quatre|cinq|six|sept|huit|neuf|dix|douze|quinze|vingt) questions)\b")
_EVERGREEN_PATH_RE = re.compile(r"/(?:faq|glossaire|lexique|fiches?|guides?|questions)(?:[/.-]|$)")


def is_evergreen(item: Item) -> bool:
    """A page meant to be read any day rather than the day's news: undated (a feed's static
    pages, dossiers; an undated item counts from when it was first seen, so it would look brand
    new), or a glossary, a FAQ, an explainer by its title or its link."""
    if item.published is None:
        return True
    path = urlsplit(item.url).path.lower() if item.url else ""
    return bool(_EVERGREEN_TITLE_RE.search(fold(item.title)) or _EVERGREEN_PATH_RE.search(path))


# ---------------------------------------------------------------- news value


def _any_of(*phrases: str) -> re.Pattern[str]:
    """One pattern for whole-word `phrases` (regular expressions over folded text)."""
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b")


# What makes an item matter to a compliance reader, beyond being on topic: an authority's
# decision, a ruling, a law adopted or coming into force, a date to act by. Patterns run on the
# folded text (lower case, no accents; ’ kept, hence "." for an apostrophe). Each kind has a
# value; a fine adds the magnitude of its amount. Only the title (full value) and the summary
# (half value; a passing mention there is less sure) are read: a body mentions many things.
_NEWS_KINDS: tuple[tuple[str, float, re.Pattern[str]], ...] = (
    ("sanction", 0.6, _any_of(
        r"amendes?", r"sanction(?:ne|nent|nee|nees|ner)?", r"condamne(?:e|es|s)?", "condamnation", r"inflige\w*",
        r"penalites?", "astreinte", "ecope", "fined", r"(?:a|the|record|gdpr|rgpd) fine")),
    ("ruling", 0.6, _any_of(
        "jugement", r"arret (?:de la|du|rendu)", "cjue", "cour de justice", r"conseil d.etat", r"cour d.appel",
        "cour de cassation", "tribunal", r"(?:a|ont) (?:juge|tranche)", "invalide", "annule", "donne raison",
        r"decision (?:de la|du|de l.)\s?(?:cnil|cepd|edpb|dpc|autorite|commission|cour|tribunal|conseil|arcom|cjue)",
        r"decision (?:irlandaise|de justice)", "ruling", "ruled", "judgment", "court rules")),
    ("notice", 0.5, _any_of(
        r"mise? en demeure", r"met(?:tent)? en demeure", "injonction", "enjoint", "ordonne",
        r"rappel(?:le|lent|ee)? a l.ordre", "se mettre en conformite", "mise en conformite", "formal notice",
        "ordered to")),
    ("law", 0.5, _any_of(
        r"adopte(?:e|es|s)?", r"adoption (?:definitive|du texte|du reglement|de la loi)", r"promulgu\w*",
        "journal officiel", r"entre(?:ra|nt|ront)? en (?:vigueur|application)", r"entree en (?:vigueur|application)",
        "devient applicable", "deviendra applicable", r"s.applique(?:ra|nt|ront)? (?:a partir|des|le|au)",
        r"(?:enters?|entered|entry) into (?:force|application)", "adopted", "enacts", "enacted", "signed into law",
        "takes effect")),
    ("guidance", 0.4, _any_of(
        "lignes directrices", "guidelines", r"(?:rend|publie|adopte) (?:son|un|ses) (?:avis|recommandations?)",
        r"avis (?:de la|du) (?:cnil|cepd|edpb)", r"recommandations? de la cnil", "referentiel")),
    ("consultation", 0.4, _any_of(
        "consultation", r"consulte(?:nt)?", r"appel a (?:contributions|commentaires|candidatures)",
        r"call for (?:evidence|input|contributions|comments)", r"consults?")),
    ("investigation", 0.3, _any_of(
        "enquete", "investigation", r"plaintes?", "porte plainte", r"saisi(?:t|ssent)?", "saisine",
        "ouvre une procedure", r"procedure (?:formelle|d.infraction)", "action coordonnee",
        r"coordinated (?:enforcement )?action", "probe", r"complaints?")),
)
SUMMARY_NEWS_SHARE = 0.5  # a signal found only in the summary counts half
# A fine's amount: "530 millions", "80 000 euros", "1,2 milliard d'euros", "€530 million". A bare
# number must carry a currency or a word of magnitude, or it is a count ("trois mois", "2 000 salariés").
_AMOUNT_RE = re.compile(
    r"(?P<before>[€$]\s?)?(?P<number>\d{1,3}(?:[ .]\d{3})+|\d+(?:[.,]\d+)?)\s?"
    r"(?P<scale>milliards?|millions?|billions?|bn|mds?|md€|m€|k€|m|k)?(?![\w])\s?"
    r"(?P<after>d.euros|euros?|€|eur\b|de dollars|dollars?|\$)?")
_SCALES = {"milliard": 1e9, "milliards": 1e9, "billion": 1e9, "billions": 1e9, "bn": 1e9, "md": 1e9, "mds": 1e9,
           "md€": 1e9, "million": 1e6, "millions": 1e6, "m€": 1e6, "m": 1e6, "k€": 1e3,
           "k": 1e3}
FINE_FLOOR = 10_000.0  # euros: a fine this size or under adds nothing to the sanction's value
FINE_PER_DECADE = 0.28  # each tenfold of the amount above FINE_FLOOR adds this much
FINE_MAGNITUDE_MAX = 1.4  # reached at about one billion euros
# A date ahead of the issue: a limit to act by ("jusqu'au 27 mai", "avant le…") within the next
# AGENDA_DAYS days counts most, another date in that time (a hearing, a launch) less, later ones least.
DEADLINE_SOON = 0.5
DATE_SOON = 0.3
DATE_LATER = 0.2
OTHER_SIGNALS_SHARE = 0.25  # signals beside the strongest add a quarter of their value
NEWS_MAX = 2.0  # the news value is in [0, NEWS_MAX]: the rank is multiplied by at most 1 + NEWS_MAX


def _fine_amount(text: str) -> float:
    """The largest amount of money in a folded text, in its currency's units (0 when none)."""
    best = 0.0
    for match in _AMOUNT_RE.finditer(text):
        scale = match["scale"] or ""
        if scale in ("m", "k") and not match["before"]:
            continue  # "500 m" is a distance; "€310m" an amount
        if not (match["before"] or match["after"] or scale in _SCALES):
            continue
        digits = match["number"]
        number = float(re.sub(r"[ .]", "", digits) if re.fullmatch(r"\d{1,3}(?:[ .]\d{3})+", digits)
                       else digits.replace(",", "."))
        best = max(best, number * _SCALES.get(scale, 1.0))
    return best


def fine_magnitude(amount: float) -> float:
    """What a fine's amount adds to its news value: nothing up to FINE_FLOOR, then FINE_PER_DECADE
    per tenfold, at most FINE_MAGNITUDE_MAX (a €530 million fine adds 1.32, an €80,000 one 0.25)."""
    if amount <= FINE_FLOOR:
        return 0.0
    return min(FINE_MAGNITUDE_MAX, FINE_PER_DECADE * math.log10(amount / FINE_FLOOR))


def news_signals(item: Item, issue_date: dt.date) -> dict[str, float]:
    """The news signals of an item and their values (see _NEWS_KINDS): authorities' decisions and
    sanctions (a fine with its amount's magnitude), rulings, formal notices, laws adopted or coming
    into force, official consultations, investigations, and dates ahead of the issue to act by.
    An evergreen page (see is_evergreen) has none: a glossary that explains fines is not news."""
    if is_evergreen(item):
        return {}
    fields = ((fold(item.title), 1.0), (fold(item.summary), SUMMARY_NEWS_SHARE))
    found: dict[str, float] = {}
    for kind, value, pattern in _NEWS_KINDS:
        share = max((share for text, share in fields if pattern.search(text)), default=0.0)
        if not share:
            continue
        found[kind] = value * share
        if kind == "sanction":
            # The amount counts in full wherever a sentence of sanction says it: "la CNIL
            # sanctionne X" in the title, "une amende de 80 000 euros" in the summary.
            found[kind] += fine_magnitude(max((_fine_amount(sentence) for text, _ in fields
                                               for sentence in split_sentences(text) if pattern.search(sentence)),
                                              default=0.0))
    reference = (item.published or item.first_seen or dt.datetime.combine(issue_date, dt.time(), tzinfo=dt.UTC)).date()
    horizon = issue_date + dt.timedelta(days=AGENDA_DAYS)
    for text in (item.title, item.summary):
        for mention in _date_mentions(text, reference):
            if mention.date > issue_date:
                worth = DATE_LATER if mention.date > horizon else DEADLINE_SOON if mention.deadline else DATE_SOON
                found["date ahead"] = max(found.get("date ahead", 0.0), worth)
    return found


def news_value(item: Item, issue_date: dt.date) -> float:
    """How much an item matters as news, in [0, NEWS_MAX]: its strongest signal plus
    OTHER_SIGNALS_SHARE of each other one (a fine that also sets a date to comply by)."""
    values = sorted(news_signals(item, issue_date).values(), reverse=True)
    if not values:
        return 0.0
    return min(NEWS_MAX, values[0] + OTHER_SIGNALS_SHARE * math.fsum(values[1:]))


# ---------------------------------------------------------------- the issue


@dataclass
class _Edits:
    """The editors' decisions on one issue, resolved to the stories they name (see apply order
    in compose_issue): a later decision on a story overrides an earlier one."""

    dropped: set[str] = dataclasses.field(default_factory=set)
    lead: str | None = None
    section: dict[str, str] = dataclasses.field(default_factory=dict)  # story id -> topic (move, add)
    placed: set[str] = dataclasses.field(default_factory=set)  # shown in their section whatever the rules say
    kicker: dict[str, str] = dataclasses.field(default_factory=dict)
    summary: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def resolve(cls, decisions: Sequence[EditorialDecision], story_of: Mapping[str, str],
                known: set[str]) -> _Edits:
        edits = cls()
        for d in decisions:
            sid = story_of.get(d.item_id)
            if sid is None:  # an item no story tells any more (the rules changed since): nothing to do
                continue
            if d.action == "drop":
                edits.dropped.add(sid)
                edits.placed.discard(sid)
                if edits.lead == sid:
                    edits.lead = None
            elif d.action == "lead":
                edits.dropped.discard(sid)
                edits.lead = sid
            elif d.action in ("move", "add"):
                edits.dropped.discard(sid)
                if d.section in known:
                    edits.section[sid] = d.section
                elif d.action == "move":
                    continue  # a section that no longer exists: the story stays where the rules put it
                edits.placed.add(sid)
                if edits.lead == sid:
                    edits.lead = None
            elif d.action == "kicker" and d.text and d.text.strip():
                edits.kicker[sid] = _kicker(d.text)
            elif d.action == "summary" and d.text and d.text.strip():
                edits.summary[sid] = d.text.strip()
        return edits


def _added_story(entry: StoredItem, section: str | None, topic_order: Sequence[str],
                 source_weights: Mapping[str, float], settings: NewsletterSettings, window_end: dt.datetime,
                 generic_ids: frozenset[str], themes: Mapping[str, str]) -> Story:
    """The story of an item an editor added, alone: under its own topics when the rules gave it
    any, else under the section the editor chose (or the first topic)."""
    if not any(t in topic_order for t in entry.classification.topics):
        topic = section if section is not None and section in topic_order else topic_order[0]
        entry = StoredItem(item=entry.item, classification=dataclasses.replace(
            entry.classification, topics=(topic,), scores={topic: 0.0}))
    return _make_story([entry], topic_order, source_weights, settings, window_end, generic_ids, themes)


def compose_issue(
    date: dt.date,
    entries: Sequence[StoredItem],
    topics: Sequence[TopicInfo],
    settings: NewsletterSettings,
    source_weights: Mapping[str, float],
    already_featured: frozenset[str] | set[str] = frozenset(),
    decisions: Sequence[EditorialDecision] = (),
) -> Issue:
    """The issue of `date` from the classified items of its window, then the editors'
    `decisions` on it applied in order (see EditorialDecision): drop a story, make one the lead,
    move one to another section, replace its kicker or summary, add an item the rules left out.
    A story an editor moved or added is always shown in its section (the section's room for the
    rules' stories shrinks accordingly); a decision naming an item no story tells is ignored."""
    _, window_end = issue_window(date, settings)
    topic_order = [t.id for t in topics]
    known = set(topic_order)
    generic = _generic_ids(entries)
    relevant = [
        e for e in entries
        if e.item.id not in already_featured and any(t in known for t in e.classification.topics)
    ]
    grouped = group_stories(relevant, source_weights, window=entries)
    themes = {t.id: t.theme for t in topics}
    made = [(_make_story(g, topic_order, source_weights, settings, window_end, generic, themes),
             all(e.item.id in grouped.roundups or is_evergreen(e.item) for e in g)) for g in grouped.groups]
    # The day's news first: an evergreen page (a glossary, a FAQ, an undated page) or a roundup
    # of stories told elsewhere ranks after every news story, so it leads only a day without news.
    background = {story.id for story, evergreen in made if evergreen}
    stories = sorted((story for story, _ in made), key=lambda s: (s.id in background, -s.score, s.id))
    by_id = {e.item.id: e for e in entries}
    if decisions and topic_order:
        told = {i for s in stories for i in s.item_ids}
        for d in decisions:  # an added item the rules did not pick is a story of its own, after theirs
            if d.action == "add" and d.item_id not in told and d.item_id in by_id:
                stories.append(_added_story(by_id[d.item_id], d.section, topic_order, source_weights, settings,
                                            window_end, generic, themes))
                told.add(d.item_id)
    edits = _Edits.resolve(decisions, {i: s.id for s in stories for i in s.item_ids}, known)
    stories = [dataclasses.replace(s, primary_topic=edits.section[s.id],
                                   topics=tuple(t for t in topic_order if t in s.topics or t == edits.section[s.id]))
               if s.id in edits.section else s
               for s in stories if s.id not in edits.dropped]
    if not stories:
        return Issue(date=date, newsletter=settings, menu=(), lead=None, sections=(), agenda=(),
                     further_reading=())
    first = next((s for s in stories if s.id == edits.lead), stories[0])
    # LE FAIT DU JOUR gets room for twice the text of a section story.
    lead_group = [by_id[i] for i in first.item_ids]
    lead_headline = _headline(lead_group[0], lead_group[0].item.id in generic, themes[first.primary_topic])
    lead = dataclasses.replace(first, text=lead_headline.text(2 * settings.summary_chars, extended=True))
    rest = [s for s in stories if s.id != first.id]
    sections: list[Section] = []
    further: list[Story] = []
    for topic in topics:
        in_topic = [s for s in rest if s.primary_topic == topic.id]
        placed = [s for s in in_topic if s.id in edits.placed]
        free = [s for s in in_topic if s.id not in edits.placed]
        if not placed and in_topic and in_topic[0].id in background:
            further.extend(in_topic)  # a section opens with news, or is not there
            continue
        room = max(settings.max_stories_per_section - len(placed), 0)
        shown_ids = {s.id for s in placed} | {s.id for s in free[:room]}
        shown = [s for s in in_topic if s.id in shown_ids]
        further.extend(free[room:])
        if shown:
            sections.append(Section(topic=topic.id, heading=topic.heading, stories=tuple(shown)))
    further.sort(key=lambda s: (s.id in background, -s.score, s.id))
    menu = tuple(_teaser(s, themes, " ".join(f"{by_id[i].item.title}. {by_id[i].item.summary} {by_id[i].item.content}"
                                             for i in s.item_ids)) for s in [lead, *rest][:3])
    further = further[: settings.max_further_reading]

    def edited(story: Story) -> Story:
        if story.id in edits.kicker:
            story = dataclasses.replace(story, kicker=edits.kicker[story.id])
        if story.id in edits.summary:
            story = dataclasses.replace(story, text=edits.summary[story.id])
        return story

    lead = edited(lead)
    sections = [dataclasses.replace(sec, stories=tuple(edited(s) for s in sec.stories)) for sec in sections]
    further = [edited(s) for s in further]
    shown_stories = [lead, *[s for sec in sections for s in sec.stories], *further]
    return _typeset(Issue(
        date=date, newsletter=settings, menu=menu, lead=lead, sections=tuple(sections),
        agenda=build_agenda(shown_stories, by_id, date), further_reading=tuple(further),
    ))


def _typeset(issue: Issue) -> Issue:
    """Every text the issue says in French characters (see french_characters), so that each
    reader of the stored issue (pages, archive, search, email subject) gets them; outlet names
    stay as configured, since they name the outlet."""

    def story(s: Story) -> Story:
        return dataclasses.replace(s, kicker=french_characters(s.kicker), title=french_characters(s.title),
                                   text=french_characters(s.text))

    return dataclasses.replace(
        issue,
        menu=tuple(dataclasses.replace(t, theme=french_characters(t.theme), text=french_characters(t.text))
                   for t in issue.menu),
        lead=story(issue.lead) if issue.lead else None,
        sections=tuple(dataclasses.replace(sec, heading=french_characters(sec.heading),
                                           stories=tuple(story(x) for x in sec.stories))
                       for sec in issue.sections),
        agenda=tuple(dataclasses.replace(a, context=french_characters(a.context)) for a in issue.agenda),
        further_reading=tuple(story(x) for x in issue.further_reading),
    )
