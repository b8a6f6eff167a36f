"""Lexicons, dampers and reading depth: the rule features that state the topics' definitions.

Three parts: the features on small rule files (behaviour and one-line errors), then the
lexicons of the repository's topics.yaml against the entities of the labelling guide
(../shared/labeled/README.md) and its traps.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.classify import Classifier
from pipeline.config.topics import load_topics
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

RULES = """\
lexicons:
  dpa: [CNIL, {term: DPC, case: true}, "Garante per la protezione dei dati personali"]
  law: [RGPD, GDPR]
  all_law: [{lexicon: dpa}, {lexicon: law}]
  traps: TRAPS
dampen:
  - name: roundup
    any: ["en bref", "revue de presse"]
    scales: [summary, content]
    factor: 0.5
  - name: job
    any: ["H/F", {term: CDI, case: true}]
    fields: [title, summary]
    factor: 0
depth:
  summary: 60
topics:
  - id: t
    heading: T
    theme: T
    threshold: 3
    unless: [{lexicon: traps}]
    rules:
      - name: authority
        weight: 2
        lexicon: all_law
      - name: fine
        near: [amende, {lexicon: dpa}]
        within: 3
"""


def compile_rules(tmp_path: Path, text: str = RULES, traps: str = '["Data Act"]') -> Classifier:
    path = tmp_path / "topics.yaml"
    path.write_text(text.replace("TRAPS", traps), encoding="utf-8")
    return Classifier.compile(load_topics(path))


def test_a_lexicon_stands_for_its_terms_and_lexicons_nest(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    for title in ("La CNIL enquête", "Le GDPR a sept ans", "Garante per la protezione dei dati personali",
                  "La DPC inflige une amende"):
        assert classifier.classify_fields("1", title, "").topics == ("t",), title
    assert classifier.classify_fields("1", "Le dpc de la ville", "").topics == ()  # case: true kept
    config = load_topics(tmp_path / "topics.yaml")
    assert [t.text for t in config.lexicon("all_law")] == [
        "CNIL", "DPC", "Garante per la protezione dei dati personali", "RGPD", "GDPR"]


def test_a_lexicon_in_near_and_in_unless(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path, traps='["RGPD du Data Act"]')
    result = classifier.classify_fields("1", "", "une amende de la CNIL")
    assert sorted({m.rule for m in result.matches}) == ["authority", "fine"]
    assert classifier.classify_fields("1", "Le RGPD du Data Act", "").topics == ()


def test_a_roundup_line_does_not_make_the_topic(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    news = classifier.classify_fields("1", "Budget", "La CNIL inflige une amende")
    roundup = classifier.classify_fields("2", "En bref : budget", "La CNIL inflige une amende")
    assert news.scores == {"t": 3.0} and news.topics == ("t",)
    assert roundup.scores == {"t": 1.5} and roundup.topics == ()
    assert {m.weight for m in roundup.matches} == {1.0, 0.5}  # the explanation shows the damped weights
    # The title of a roundup still counts.
    assert classifier.classify_fields("3", "En bref : la CNIL", "").topics == ("t",)


def test_a_job_offer_names_the_field_it_recruits_for(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    assert classifier.classify_fields("1", "Juriste RGPD H/F", "Poste en CDI").topics == ()
    assert classifier.classify_fields("1", "Juriste RGPD", "Le métier change").topics == ("t",)


def test_what_lies_deeper_than_the_depth_is_not_read(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    filler = "Une longue introduction sur tout autre chose que le sujet. "
    assert classifier.classify_fields("1", "x", "La CNIL et une amende").topics == ("t",)
    deep = classifier.classify_fields("1", "x", filler + "La CNIL et une amende")
    assert deep.matches == ()


def test_without_a_summary_the_content_is_the_lead(tmp_path: Path) -> None:
    classifier = compile_rules(tmp_path)
    body = "La CNIL a infligé une amende"
    assert classifier.classify_fields("1", "x", "", body).scores == {"t": 3.0}
    assert classifier.classify_fields("1", "x", "Lire la suite", body).scores == {"t": 3.0}
    # With a real summary, the content weighs as content.
    assert classifier.classify_fields("1", "x", "Un article sur le budget de l'an prochain", body).scores == {
        "t": 1.5}


@pytest.mark.parametrize(
    ("change", "line", "where", "problem"),
    [
        (("lexicon: all_law", "lexicon: nowhere"), 26, "topic t, rule authority.lexicon", "unknown lexicon 'nowhere'"),
        (("  law: [RGPD, GDPR]", "  law: [RGPD, {lexicon: all_law}]"), 4, "lexicons.all_law[1].lexicon",
         "includes itself (law -> all_law -> law)"),
        (("  law: [RGPD, GDPR]", "  law: []"), 3, "lexicons.law", "at least one term"),
        (("  law: [RGPD, GDPR]", "  law: [{all: [RGPD, GDPR]}]"), 3, "lexicons.law[0]", "a lexicon entry is a term"),
        (("    factor: 0.5", "    factor: 1.5"), 10, "dampen roundup.factor", "below 1"),
        (("    factor: 0.5\n", ""), 7, "dampen roundup", "missing `factor`"),
        (("    scales: [summary, content]", "    scales: [body]"), 9, "dampen roundup.scales", "unknown field 'body'"),
        (("    fields: [title, summary]", "    where: [title]"), 13, "dampen job.where", "unknown key"),
        (("  summary: 60", "  summary: -1"), 16, "depth.summary", "whole number of characters"),
    ],
)
def test_bad_features_are_named(tmp_path: Path, change: tuple[str, str], line: int, where: str,
                                problem: str) -> None:
    assert change[0] in RULES
    with pytest.raises(ConfigError) as caught:
        compile_rules(tmp_path, RULES.replace(change[0], change[1], 1))
    error = caught.value
    assert (error.line, error.key) == (line, where), str(error)
    assert problem in error.message, str(error)
    assert "\n" not in str(error)


# ---------------------------------------------------------------- the repository's lexicons


@pytest.fixture(scope="module")
def real() -> Classifier:
    return Classifier.compile(load_topics(REPO / "topics.yaml"))


def test_every_lexicon_of_topics_yaml_is_used_and_not_empty() -> None:
    config = load_topics(REPO / "topics.yaml")
    text = (REPO / "topics.yaml").read_text(encoding="utf-8")
    assert len(config.lexicons) >= 15
    for name, terms in config.lexicons:
        assert terms, name
        assert text.count(f"lexicon: {name}}}") + text.count(f"lexicon: {name}\n") >= 1, f"{name} is never used"


@pytest.mark.parametrize(
    ("topic", "title"),
    [
        # Meta by its town, its labs, its people and products, in French and English
        ("meta_ai", "Le groupe de Menlo Park présente un modèle de vidéo générée par IA"),
        ("meta_ai", "Le FAIR de Meta perd son directeur"),
        ("meta_ai", "Yann LeCun défend l'IA ouverte de Meta"),
        ("meta_ai", "Llama 4 arrive en Europe"),
        ("meta_ai", "Facebook's parent trains its AI on European posts"),
        ("meta_ai", "Zuckenberg promet une superintelligence"),  # a frequent misspelling
        ("meta_ai", "Llama3 en tête des classements open source"),  # a version without a space
        ("meta_ai", "Emu Video : Meta anime les images"),  # a product that is Meta's next to Meta
        ("meta_ai", "Meta réorganise MSL en quatre équipes"),  # Meta Superintelligence Labs
        ("meta_ai", "Le groupe de Mark Zuckerberg lance un nouvel assistant IA"),
        ("meta_ai", "Le laboratoire FAIR publie un modèle de transcription"),  # FAIR with a lab word
        ("meta_ai", "Agents d'IA : Meta s'offre Manus"),  # an AI start-up bought by Meta
        # data-protection authorities in their own, French and English names
        ("rgpd", "Le Garante per la protezione dei dati personali bloque un chatbot"),
        ("rgpd", "La Autoriteit Persoonsgegevens inflige une amende à Clearview"),
        ("rgpd", "Datatilsynet urges users to object"),
        ("rgpd", "L'AEPD sanctionne une banque"),
        ("rgpd", "La DPC irlandaise ouvre une enquête"),
        ("rgpd", "Le contrôleur européen de la protection des données rend son avis"),
        ("rgpd", "The Hamburg DPA weighs an urgency procedure"),
        ("rgpd", "Vie privée : l'autorité néerlandaise met en garde les utilisateurs d'Instagram"),
        ("rgpd", "Le R.G.P.D. reste un mystère"),
        ("rgpd", "Six ans de GDPR"),
        ("rgpd", "La Coimisiún um Chosaint Sonraí inflige une amende à TikTok"),  # the DPC in Irish
        ("rgpd", "Der Landesbeauftragte für den Datenschutz warnt vor der App"),  # a Land's authority
        ("rgpd", "L'APD belge sanctionne un hôpital"),  # an ambiguous acronym with its country
        ("rgpd", "L'ÚOOÚ tchèque inflige une amende"),
        ("rgpd", "Swiss FDPIC opens investigation into Bard"),
        ("rgpd", "Nommer un délégué à la protection des données : mode d'emploi"),  # the GDPR's duties
        ("rgpd", "DPIA templates for AI projects"),
        ("rgpd", "SCCs under fire after new ruling"),  # a transfer tool
        ("rgpd", "Décisions automatisées : la Cour consacre un droit à l'explication"),
        ("rgpd", "Swedish regulator fines retailer over tracking pixel"),  # a tracker
        # the AI Act by its names, number, institutions, duties and dates
        ("ai_act", "Le règlement (UE) 2024/1689 s'applique"),
        ("ai_act", "Le Bureau de l'IA recrute des experts"),
        ("ai_act", "EU AI Office publishes a template"),
        ("ai_act", "Systèmes d'IA à haut risque : les lignes directrices attendues"),
        ("ai_act", "RIA : la DGCCRF désignée"),
        ("ai_act", "L'A.I. Act expliqué simplement"),
        ("ai_act", "IA à usage général : le code de bonnes pratiques est publié"),
        ("ai_act", "KI-Verordnung: Bundesnetzagentur wird Aufsicht"),  # in a member state's language
        ("ai_act", "L'AIA impose de nouvelles obligations aux fournisseurs"),
        ("ai_act", "GPAI : le code de bonnes pratiques signé par Mistral"),
        ("ai_act", "Scientific panel on AI: call for experts"),
        ("ai_act", "AESIA, la première agence de supervision de l'IA en Europe"),  # a national authority
        ("ai_act", "Qu'est-ce qu'un système d'IA ? Bruxelles précise la définition"),  # the Act's article 3
        # deals between AI or platform firms and news publishers or agencies
        ("media_partnership", "L'AFP signe un accord de licence avec Mistral AI"),
        ("media_partnership", "Axel Springer and OpenAI strike a content deal"),
        ("media_partnership", "Droits voisins : Google verse 40 millions aux éditeurs de presse"),
        ("media_partnership", "EBRA scelle un partenariat avec Perplexity"),
        ("media_partnership", "Mistral AI puise dans les dépêches de l'AFP"),
        ("media_partnership", "La Deutsche Presse-Agentur s'allie à une start-up d'IA"),
    ],
)
def test_the_lexicons_name_each_topic(real: Classifier, topic: str, title: str) -> None:
    assert topic in real.classify_fields("1", title, "").topics


@pytest.mark.parametrize(
    "title",
    [
        "Data Act : ce qui change pour les objets connectés",  # another Act
        "Chips Act 2.0 : les industriels réclament plus",
        "Colorado delays its AI Act",  # another jurisdiction's AI law
        "La Corée du Sud adopte sa loi-cadre sur l'intelligence artificielle",
        "Sécurité incendie : les RIA du gymnase jugés non conformes",  # a fire hose reel
        "Viginum dévoile un réseau relayant RIA Novosti",
        "Des métadonnées mal renseignées privent les artistes de revenus",
        "Meta Quest 3 : la mise à jour v68",
        "Fuite de données : 16 milliards d'identifiants dans la nature",  # a leak, no law
        "Droits voisins : les musiciens veulent une rémunération sur les plateformes d'écoute",
        "La Voix du Nord et le LOSC renouvellent leur partenariat",  # not a platform
        "Juriste RGPD / Data Protection H/F — CDI — Paris",  # a job offer
        "Agenda : les rendez-vous tech de la semaine",
        "Yann LeCun reçoit un doctorat honoris causa",  # Meta's AI people, not about Meta's AI
        "Alexander Wang présente sa collection à New York",
        "L'APD française atteint 0,5 % du revenu national",  # development aid, not the Belgian APD
        "GBA : la Game Boy Advance fête ses 25 ans",
        "DPD France livre un million de colis par jour",  # the parcel carrier, not the officer
        "GPAI : le Partenariat mondial sur l'IA se réunit à Paris",  # the OECD's partnership
        "L'AIA, association des architectes américains, se réunit",
        "Le marquage CE des jouets renforcé",  # product safety without AI
        "Le Monde recrute un journaliste spécialisé en IA",  # a newsroom, no deal
        "Llama trekking: a gentle walk with woolly companions",  # the animal
        "Wiley signs AI licensing deal for its scientific journals",  # academic publishing
    ],
)
def test_the_traps_select_no_topic(real: Classifier, title: str) -> None:
    summary = {"Agenda : les rendez-vous tech de la semaine":
               "Mardi, conférence sur le RIA et la conformité ; jeudi, atelier RGPD."}.get(title, "")
    assert real.classify_fields("1", title, summary).topics == ()


def test_dpo_in_ai_research_is_not_the_officer(real: Classifier) -> None:
    summary = "Direct preference optimization (DPO) est une technique de fine-tuning des LLM."
    assert "rgpd" not in real.classify_fields("1", "Le DPO améliore l'alignement des modèles", summary).topics
    assert "rgpd" in real.classify_fields("1", "Le DPO, nouveau métier indispensable des PME", "").topics


@pytest.mark.parametrize(
    ("title", "summary"),
    [
        # A newsletter that says so in its lead.
        ("The Download: fusion's funding boom, and a robot",
         "This is today's edition of The Download, our weekday newsletter. Also: Meta AI gets a new voice mode."),
        # A firm's hire names the hire's specialities.
        ("Le cabinet Martin renforce son pôle numérique",
         "Claire Durand rejoint le cabinet en qualité d'associée. Spécialiste du RGPD et du règlement européen "
         "sur l'IA, elle accompagne des éditeurs de logiciels."),
        # A job posting in English.
        ("Senior Policy Manager, AI & Data — Brussels",
         "You will follow the implementation of the AI Act and the GDPR. Competitive salary. Apply by 15 January."),
    ],
)
def test_newsletters_hires_and_job_postings_do_not_make_their_topics(
        real: Classifier, title: str, summary: str) -> None:
    assert real.classify_fields("1", title, summary).topics == ()


def test_a_roundup_one_liner_does_not_make_its_topic(real: Classifier) -> None:
    summary = "Au menu : la 5G, le budget du numérique, et la CNIL qui publie un guide."
    assert "rgpd" not in real.classify_fields("1", "En bref : l'actualité du jour", summary).topics


def test_a_misspelling_and_a_missing_accent_still_match(real: Classifier) -> None:
    assert "ai_act" in real.classify_fields("1", "Reglement europeen sur l'IA : feu vert definitif", "").topics
    assert "rgpd" in real.classify_fields("1", "Le RGDP a bon dos", "").topics


def test_rules_file_has_the_documented_sections() -> None:
    text = textwrap.dedent((REPO / "topics.yaml").read_text(encoding="utf-8"))
    for key in ("lexicons:", "dampen:", "depth:", "topics:"):
        assert f"\n{key}" in text


@pytest.mark.parametrize(
    ("title", "summary", "topic"),
    [
        # A name used as the yardstick of another subject is not the subject.
        ("Samsung dévoile son assistant Gauss, concurrent de Meta AI", "", "meta_ai"),
        ("Sanctions de l'AI Act : jusqu'à 7 % du chiffre d'affaires",
         "Les amendes prévues pour les pratiques interdites sont plus lourdes que celles du RGPD.", "rgpd"),
        # Another company's AI on a Meta service is not Meta's AI.
        ("ChatGPT arrive sur WhatsApp : comment discuter avec le chatbot d'OpenAI",
         "Il suffit d'enregistrer un numéro pour converser avec l'assistant IA d'OpenAI dans la messagerie de Meta.",
         "meta_ai"),
        # A newspaper quoted as the source of a story is not a party to a deal.
        ("Yahoo pourrait croquer Dailymotion",
         "Orange cherche un partenaire aux États-Unis pour développer la plateforme. Un partenaire qui pourrait "
         "s'appeler Yahoo, à en croire le Wall Street Journal.", "media_partnership"),
        # Sport's media rights and school-book publishers are not the press.
        ("Amazon and NBA sign 11-year media rights deal", "", "media_partnership"),
        ("Les éditeurs de manuels scolaires signent avec Mistral", "", "media_partnership"),
    ],
)
def test_a_yardstick_a_quoted_source_or_another_firms_ai_is_not_the_topic(
        real: Classifier, title: str, summary: str, topic: str) -> None:
    assert topic not in real.classify_fields("1", title, summary).topics


@pytest.mark.parametrize(
    ("topic", "title", "summary"),
    [
        # The topic in words the lexicons learnt from the guide, not from one item.
        ("meta_ai", "Imagine : l'outil de génération d'images de Meta débarque sur Instagram", ""),
        ("meta_ai", "Facebok et Insta : votre contenu nourrit l'IA", ""),  # misspelt and short names
        ("rgpd", "Effacer ses données d'un site de rencontres : le parcours du combattant",
         "Nous avons exercé notre droit à l'effacement auprès de cinq applications."),
        ("rgpd", "Un hôpital mis en demeure",
         "Selon l'autorité de contrôle, l'établissement n'avait pas notifié la violation de données à temps."),
        ("ai_act", "La France désigne les autorités chargées de surveiller les systèmes d'IA", ""),
        ("ai_act", "Littératie en IA : une obligation méconnue", ""),
        ("media_partnership", "Press publishers' right: Danish court rules against Microsoft", ""),
    ],
)
def test_the_definitions_reach_new_wordings(real: Classifier, topic: str, title: str, summary: str) -> None:
    assert topic in real.classify_fields("1", title, summary).topics


# ---------------------------------------------------------------- issue 15, fifth round: definitions


@pytest.mark.parametrize(
    ("topic", "title", "summary"),
    [
        # Evidence split between the title and the lead (rules with `combine`).
        ("meta_ai", "Ce qui change cet été sur WhatsApp", "Le service de messagerie va proposer son intelligence "
                                                         "artificielle à tous ses utilisateurs européens."),
        ("rgpd", "Une chaîne d'hôtels mise en demeure", "La CNIL lui reproche de garder les copies des passeports "
                                                       "de ses clients bien au-delà de leur séjour."),
        ("ai_act", "Bacs à sable : la France choisit son pilote", "Les start-up pourront y tester des systèmes "
                                                                "d'IA avant leur mise sur le marché."),
        ("media_partnership", "Le moteur de réponses de Perplexity s'étoffe",
         "Trois quotidiens régionaux ont signé un accord de partage des revenus publicitaires."),
        # Exercising a right; delisting; a national authority with consent or biometrics.
        ("rgpd", "Ce que mon opérateur savait de moi", "J'ai exercé mon droit d'accès : voici ce que j'ai reçu."),
        ("rgpd", "Search engine delisting requests rise", "Requests to delist results about people keep growing."),
        ("rgpd", "Un fabricant de caméras puni", "Le régulateur belge sanctionne la collecte de gabarits biométriques "
                                             "sans consentement."),
        # The Act's categories with their duties; its word for users; its authorities' own names.
        ("ai_act", "Foundation models: what providers must document", ""),
        ("ai_act", "Modèles à risque systémique : la liste s'allonge", ""),
        ("ai_act", "Les déployeurs aussi ont des devoirs", ""),
        ("ai_act", "Qui surveillera l'IA ?", "Le gouvernement désigne trois autorités de surveillance du marché pour "
                                           "l'intelligence artificielle."),
        # Laws that make platforms pay the press, elsewhere.
        ("media_partnership", "Online News Act: the first cheques arrive", ""),
        # Set K: a newspaper named as French writes it after "du" or "au".
        ("media_partnership", "Les contrats avec OpenAI pèsent 5 % des revenus du Monde", ""),
        # Meta's own AI by a possessive, whoever it buys from.
        ("meta_ai", "Meta licenses Midjourney's image tech for its AI models", ""),
        # The EU's AI law named as a body of law; banned practices in other words.
        ("ai_act", "Au bureau, l'IA n'a plus le droit de lire vos émotions",
         "Le droit européen de l'intelligence artificielle range la reconnaissance des émotions au travail parmi "
         "les pratiques proscrites."),
    ],
)
def test_fifth_round_definitions_find_their_topic(real: Classifier, topic: str, title: str, summary: str) -> None:
    assert topic in real.classify_fields("1", title, summary).topics


@pytest.mark.parametrize(
    ("title", "summary", "topic"),
    [
        # The right to be forgotten of former patients is insurance law.
        ("Droit à l'oubli : les anciens malades du cancer n'ont plus à se déclarer", "", "rgpd"),
        # Privacy sold as a product.
        ("Apple brings Advanced Data Protection to more countries", "", "rgpd"),
        # Liability law for AI is another law.
        ("New liability rules for AI products adopted by the EU", "", "ai_act"),
        # A competition case about an AI feature.
        ("Brussels opens antitrust probe into an AI ban on a messaging app", "", "ai_act"),
        # Another maker's model derived from Llama.
        ("Llama-Nemotron tops a coding benchmark", "", "meta_ai"),
        # A deal said not to exist.
        ("Le Télégramme teste un assistant d'OpenAI, sans contrat", "Aucun accord n'a été signé avec l'éditeur.",
         "media_partnership"),
        # A roundup's passing line after "En bref".
        ("La lettre du jeudi", "La publicité recule. En bref : un éditeur signe avec OpenAI.", "media_partnership"),
        # The Dutch competition regulator is no data-protection authority.
        ("De ACM onderzoekt", "The Dutch regulator ACM looks at consent screens in apps.", "rgpd"),
        # Set K: a newspaper's name that is a common phrase counts only with its capital; "Méta" in other
        # senses; the World Cup is not the daily; an advertisement's call to action.
        ("Méta-analyse : le temps d'écran associé à des troubles du sommeil", "", "media_partnership"),
        ("Faites le point avec notre plateforme partenaire d'IA", "", "media_partnership"),
        ("Coupe du Monde : OpenAI signe un partenariat avec la FIFA", "", "media_partnership"),
        ("Conformité RGPD : notre plateforme tout-en-un", "Demandez une démo gratuite.", "rgpd"),
        # Meta's former people elsewhere, a researcher's own lab, a roundup's title listing stories.
        ("Ex-Meta AI research chief joins Cohere",
         "Pineau, who led Meta's FAIR lab until May, becomes chief AI officer of the enterprise AI company.",
         "meta_ai"),
        ("AMI Labs, Yann LeCun's new start-up, raises funds", "", "meta_ai"),
        ("La matinale : l'omnibus IA passe en commission, Meta sort de nouvelles lunettes", "", "meta_ai"),
        # A competition case about a consent screen; the AI Act's authorities, the CNIL among them.
        ("Autorité de la concurrence : amende pour Apple et son écran de consentement",
         "Le gendarme de la concurrence juge le consentement au suivi discriminatoire, sans contester la protection "
         "de la vie privée.", "rgpd"),
        ("Règlement IA : Bercy désigne ses autorités de surveillance du marché",
         "La Cnil hérite des systèmes biométriques, qui traitent des données personnelles ; l'Arcom des contenus.",
         "rgpd"),
    ],
)
def test_fifth_round_traps_stay_out(real: Classifier, title: str, summary: str, topic: str) -> None:
    assert topic not in real.classify_fields("1", title, summary).topics

