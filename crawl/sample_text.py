"""A small seeded generator of natural-looking English article prose for the sample web.

Sentences come from templates with many slots (people, places, topic words, numbers), drawn
without replacement within an article, so that the text passes document-quality filters (lots
of function words, few repeated n-grams) and two different articles share few word 5-grams
(MinHash near-duplicate detection keeps them apart).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

__all__ = ["Article", "TOPICS", "distinct_names", "fill_template", "generate_article", "is_held_out_name", "made_up_name"]

FIRST_NAMES = (
    "Maria Daniel Aisha Tomas Priya Lukas Hannah Omar Sofia Kenji Elena Samuel Grace Mateo Leila "
    "Victor Nadia Oliver Chloe Rafael Ingrid Jonah Amara Felix Rosa Ethan Mei Julian Zara Hugo "
    "Clara Isaac Noor Bruno Lena Marcus Yara Theo Alice Kwame"
).split()
LAST_NAMES = (
    "Okafor Lindqvist Moreau Tanaka Alvarez Novak Brennan Haddad Costa Fischer Mensah Rossi "
    "Kowalski Duarte Nakamura Patel Johansson Ferreira Schmidt Adeyemi Laurent Horvat Quinn "
    "Sato Ibrahim Keller Walsh Romero Berg Castillo Ahmed Larsen Fontaine Oduya Varga Whitfield"
).split()
PLACES = (
    "Millbrook Eastbay Harrowgate Pinecrest Saltmarsh Riverton Ashford Kingsley Larkspur "
    "Dunmore Stonehaven Fairview Windmere Oakridge Brightwater Ravensworth Elmstead Copperfield "
    "Marlow Glenrock Whitby Northgate Silverlake Thornbury Hollowell Redcliff Bayside Westmoor "
    "Cedarville Lowfield Summerhill Greywick"
).split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = "January February March April May June July August September October November December".split()
ADVERBS = (
    "quietly slowly carefully suddenly gradually remarkably surprisingly steadily patiently "
    "eagerly openly barely clearly nearly"
).split()
FEELINGS = "pleased relieved curious surprised hopeful cautious proud excited doubtful grateful".split()
TIMES = (
    "early in the morning|late in the afternoon|just after lunch|before sunrise|on a rainy evening|"
    "during the long weekend|at the end of the season|over the past few weeks|in the spring|"
    "after the summer holidays|on a cold night|around midday"
).split("|")


@dataclass(frozen=True)
class Topic:
    name: str
    nouns: tuple[str, ...]  # plural nouns
    things: tuple[str, ...]  # singular nouns
    adjectives: tuple[str, ...]
    verbs: tuple[str, ...]  # past tense, transitive
    groups: tuple[str, ...]  # people who do it
    activities: tuple[str, ...]  # gerund phrases
    venues: tuple[str, ...]


def _topic(name, nouns, things, adjectives, verbs, groups, activities, venues) -> Topic:
    split = lambda s: tuple(x.strip() for x in s.split("|"))  # noqa: E731
    return Topic(name, split(nouns), split(things), split(adjectives), split(verbs), split(groups),
                 split(activities), split(venues))


TOPICS: tuple[Topic, ...] = (
    _topic("gardening", "tomatoes|roses|seedlings|hedges|herbs|beans|tulips|apple trees|raised beds|compost heaps",
           "greenhouse|watering can|trellis|vegetable patch|wheelbarrow|flower border|pond",
           "fragrant|sturdy|leafy|overgrown|sheltered|sunny|damp|colourful",
           "planted|pruned|watered|harvested|repotted|mulched|weeded",
           "gardeners|allotment holders|volunteers|neighbours|students",
           "sowing seeds|turning the soil|saving rainwater|growing vegetables|keeping bees",
           "community garden|allotment|botanical garden|school garden|walled garden"),
    _topic("cooking", "dumplings|pastries|soups|spices|loaves|sauces|noodles|pickles|pies|cheeses",
           "oven|recipe|cast iron pan|stockpot|kitchen table|bread starter|market stall",
           "crisp|tender|smoky|tangy|golden|hearty|delicate|savoury",
           "baked|simmered|roasted|seasoned|kneaded|tasted|plated",
           "cooks|bakers|home chefs|food writers|market traders",
           "baking bread|making stock|fermenting cabbage|grinding spices|rolling pasta",
           "bakery|night market|cookery school|village kitchen|food hall"),
    _topic("astronomy", "comets|galaxies|meteors|nebulae|moons|planets|star clusters|eclipses|satellites",
           "telescope|observatory dome|star chart|night sky|eyepiece|camera mount|lens",
           "faint|distant|bright|dusty|icy|ancient|brilliant|elusive",
           "observed|photographed|measured|tracked|catalogued|spotted|charted",
           "astronomers|stargazers|club members|researchers|amateur observers",
           "watching the sky|timing the transit|counting meteors|polishing mirrors|logging observations",
           "observatory|hilltop field|planetarium|dark sky park|university roof"),
    _topic("cycling", "bicycles|routes|hills|wheels|saddles|tyres|climbs|trails|races|bike lanes",
           "frame|handlebar|chain|helmet|mountain pass|repair stand|rear light",
           "steep|muddy|smooth|winding|lightweight|rusty|narrow|scenic",
           "repaired|climbed|mapped|tested|raced|pumped|adjusted",
           "cyclists|riders|commuters|mechanics|club racers",
           "fixing punctures|riding at dawn|planning routes|training for races|cleaning chains",
           "velodrome|repair shop|coastal path|forest trail|town square"),
    _topic("birdwatching", "herons|swallows|owls|finches|gulls|kestrels|warblers|geese|nests|feathers",
           "hide|pair of binoculars|field guide|reed bed|nesting box|feeder|notebook",
           "shy|noisy|migrating|speckled|elegant|rare|restless|tiny",
           "counted|sketched|recorded|identified|ringed|followed|heard",
           "birdwatchers|wardens|ornithologists|photographers|children",
           "counting flocks|listening for songs|building nest boxes|walking the marsh|keeping records",
           "nature reserve|estuary|wetland|woodland|lighthouse"),
    _topic("music", "violins|choirs|melodies|drums|concerts|rehearsals|songs|records|guitars|pianos",
           "stage|rehearsal room|old piano|sound desk|songbook|bandstand|microphone",
           "lively|mournful|gentle|loud|haunting|cheerful|rhythmic|unusual",
           "played|recorded|composed|tuned|rehearsed|arranged|performed",
           "musicians|singers|teachers|drummers|sound engineers",
           "learning scales|writing lyrics|tuning strings|playing duets|rehearsing harmonies",
           "concert hall|music school|jazz club|church hall|village green"),
    _topic("sailing", "boats|sails|harbours|tides|ropes|knots|waves|islands|anchors|currents",
           "mast|rudder|dinghy|jetty|compass|life jacket|lighthouse",
           "salty|calm|choppy|windy|sheltered|weathered|swift|sturdy",
           "launched|steered|repaired|rigged|moored|painted|sailed",
           "sailors|fishermen|instructors|harbour masters|crews",
           "reading the wind|tying knots|mending sails|checking the tides|rowing ashore",
           "marina|sailing club|fishing harbour|boatyard|sea wall"),
    _topic("pottery", "bowls|jugs|vases|glazes|kilns|mugs|tiles|plates|sculptures|clay pots",
           "wheel|studio|kiln|sketchbook|workbench|glaze bucket|drying rack",
           "glossy|rough|earthy|cracked|speckled|handmade|fragile|heavy",
           "shaped|glazed|fired|trimmed|painted|polished|moulded",
           "potters|apprentices|artists|collectors|teachers",
           "throwing pots|mixing glazes|firing the kiln|carving patterns|drying clay",
           "studio|craft fair|museum|workshop|art school"),
    _topic("hiking", "mountains|valleys|footpaths|rivers|ridges|waterfalls|meadows|summits|forests|maps",
           "rucksack|trail marker|stone bridge|mountain hut|walking pole|map case|campsite",
           "rocky|misty|peaceful|windswept|rugged|quiet|green|remote",
           "crossed|explored|followed|climbed|mapped|reached|photographed",
           "walkers|hikers|rangers|guides|families",
           "reading maps|crossing streams|camping overnight|packing light|watching the weather",
           "national park|mountain refuge|valley village|visitor centre|ridge path"),
    _topic("libraries", "books|manuscripts|archives|maps|letters|catalogues|newspapers|shelves|journals|diaries",
           "reading room|card index|rare volume|microfilm reader|study desk|ledger|bookcase",
           "dusty|valuable|forgotten|illustrated|handwritten|fragile|curious|rare",
           "catalogued|restored|digitised|borrowed|translated|archived|rediscovered",
           "librarians|archivists|historians|readers|volunteers",
           "sorting letters|repairing bindings|reading aloud|tracing family histories|indexing records",
           "town library|county archive|reading room|university library|museum"),
    _topic("weather", "storms|clouds|rainfall|winds|frosts|droughts|floods|snowfalls|heatwaves|forecasts",
           "rain gauge|weather station|barometer|thermometer|wind vane|satellite image|radar map",
           "humid|freezing|stormy|mild|gusty|unsettled|foggy|dry",
           "measured|predicted|recorded|tracked|reported|forecast|compared",
           "forecasters|farmers|climate scientists|pilots|students",
           "reading the barometer|logging temperatures|watching the clouds|checking rain gauges|launching balloons",
           "weather station|research centre|coastal town|airfield|farm"),
    _topic("trains", "railways|locomotives|stations|carriages|timetables|signals|tunnels|bridges|tracks|platforms",
           "steam engine|signal box|ticket office|viaduct|goods yard|waiting room|station clock",
           "old|restored|busy|rattling|punctual|historic|crowded|scenic",
           "restored|drove|timed|inspected|painted|rebuilt|photographed",
           "railway workers|enthusiasts|drivers|passengers|engineers",
           "restoring engines|checking signals|timing journeys|laying track|polishing brass",
           "heritage railway|station|engine shed|museum|junction"),
)

# Sentence templates. Slots: {P} person, {P2} another person, {G} group, {N} plural noun,
# {N2} another plural noun, {T} thing, {A} adjective, {A2} another, {V} past verb, {ACT} activity,
# {PL} place, {VEN} venue, {D} weekday, {M} month, {NUM} number, {ADV} adverb, {F} feeling,
# {TIME} time phrase, {TOPIC} topic name.
TEMPLATES = (
    "{P} said that the {A} {N} near {PL} had become {ADV} more {A2} than anyone expected.",
    "Most of the {G} who came to the {VEN} on {D} were there for the {N}, but some of them stayed for the {N2}.",
    "It was {TIME} when {P} first noticed that the {T} was not where it should have been.",
    "According to {P}, there are at least {NUM} {N} in {PL} that nobody has written about yet.",
    "We asked {P2} why the {G} of {PL} care so much about {ACT}, and the answer was simple.",
    "If you have never tried {ACT}, this is a good time of year to start, and you do not need much.",
    "The {VEN} in {PL} opened its doors in {M}, and within a week the {N} were the talk of the town.",
    "There is something {A} about the way {G} talk about their {N} when they think no one is listening.",
    "{P} has spent {NUM} years {ACT}, and still says that every season teaches something new.",
    "By the end of {M}, the {G} had {V} almost {NUM} {N}, which is more than they managed last year.",
    "One of the {G} told us that the secret is to be {ADV} patient with the {T}.",
    "Not everyone agrees, of course, and {P2} thinks the {A} {N} are overrated.",
    "When the {T} finally arrived, {P} was {F} to see that it had survived the journey from {PL}.",
    "The first thing you notice at the {VEN} is the smell of the {N}, which is {A} and hard to forget.",
    "In {PL}, people still remember the year when the {N} were so {A} that nobody could ignore them.",
    "{P} and {P2} {V} the {N} together, taking turns so that neither of them got too tired.",
    "Few of the visitors realise how much work goes into {ACT} before the {VEN} opens on {D}.",
    "Local records show that the {G} of {PL} have been {ACT} for well over {NUM} years.",
    "As the light faded, the {N} looked even more {A} than they had during the day.",
    "Some of the older {G} say that {ACT} was much harder when they were young, and they may be right.",
    "The {T} that {P} uses is older than most of the {G} who come to watch.",
    "After a long discussion, the {G} decided to leave the {N} alone until {M}.",
    "There were {NUM} of us at the {VEN} that day, and each of us had a different idea about the {T}.",
    "{P2} laughed when we asked about the {A} {T}, and then showed us a photograph of it from years ago.",
    "It is easy to forget that the {N} we take for granted were once rare in {PL}.",
    "Anyone who has spent an afternoon {ACT} will know how {A} and absorbing it can be.",
    "The best advice {P} could give was to start small, keep notes, and ask the {G} for help.",
    "On {D} mornings the {VEN} is almost empty, which is when the {G} prefer to work.",
    "For {P2}, the most important part of the year comes in {M}, when the {N} are at their best.",
    "Although the weather was {ADV} against them, the {G} {V} every one of the {N} before dark.",
    "Nobody in {PL} could explain why the {N} had suddenly become so {A}.",
    "A small sign by the {T} asks visitors not to touch anything, but most of them do anyway.",
    "You can tell a lot about a town from its {VEN}, and the one in {PL} is no exception.",
    "{P} keeps a notebook about every {T} in {PL}, and the notes now fill {NUM} pages.",
    "Even the {G} who had doubts at the start were {F} by what they found in {PL}.",
    "The plan was to finish by {D}, but the {N} had other ideas and the work went on for weeks.",
    "Ask ten {G} about {ACT} and you will hear ten different stories, each of them true in its way.",
    "What began as a hobby for {P} has become a small project that involves half of {PL}.",
    "In the corner of the {VEN} stands a {A} {T} that has not been moved since {M}.",
    "It takes about {NUM} minutes to walk from the station in {PL} to the {VEN}, and the route is worth it.",
    "The {G} meet every {D} to compare notes on the {N} and to plan the next month.",
    "{P2} is not convinced that the {N} will last, but would be {F} to be proven wrong.",
    "For a while it seemed that the {VEN} would close, until the {G} of {PL} stepped in to help.",
    "Those who visit in {M} will find the {N} at their most {A}, and the paths at their busiest.",
    "One evening {P} {V} a {T} so {A} that the whole group stopped to look at it.",
    "The history of {ACT} in {PL} is longer and stranger than most people would guess.",
    "There was no prize for the most {A} {T}, but the {G} competed for it all the same.",
    "In the end, as {P} put it, the {N} are only half of the story; the people are the other half.",
    "Since the spring, {NUM} new {G} have joined, most of them from {PL} and the villages around it.",
    "Careful readers will notice that the {N} in the photographs are not all from the same year.",
)

TITLE_TEMPLATES = (
    "How the {G} of {PL} keep {ACT} alive",
    "A {A} year for {N} in {PL}",
    "{P}: notes on {ACT}",
    "Why {N} matter more than you think",
    "An afternoon at the {VEN} in {PL}",
    "What {NUM} years of {ACT} taught {P}",
    "The {A} {N} of {PL}",
    "{M} at the {VEN}: {N}, {N2} and a {T}",
)


@dataclass(frozen=True)
class Article:
    """A generated article: title, byline author, topic name and paragraphs."""

    title: str
    author: str
    topic: str
    paragraphs: tuple[str, ...]


def _fill(template: str, rng: random.Random, topic: Topic) -> str:
    person = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    person2 = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    nouns = rng.sample(topic.nouns, 2)
    adjectives = rng.sample(topic.adjectives, 2)
    slots = {
        "P": person,
        "P2": person2,
        "G": rng.choice(topic.groups),
        "N": nouns[0],
        "N2": nouns[1],
        "T": rng.choice(topic.things),
        "A": adjectives[0],
        "A2": adjectives[1],
        "V": rng.choice(topic.verbs),
        "ACT": rng.choice(topic.activities),
        "PL": rng.choice(PLACES),
        "VEN": rng.choice(topic.venues),
        "D": rng.choice(WEEKDAYS),
        "M": rng.choice(MONTHS),
        "NUM": str(rng.choice((3, 4, 5, 6, 7, 8, 9, 12, 15, 20, 25, 30, 40, 50, 60, 120))),
        "ADV": rng.choice(ADVERBS),
        "F": rng.choice(FEELINGS),
        "TIME": rng.choice(TIMES),
        "TOPIC": topic.name,
    }
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def fill_template(template: str, rng: random.Random, topic: Topic) -> str:
    """Fill a sentence template's slots ({P} a person, {PL} a place, {TIME}, {D}, {M}, ...) with
    `topic`'s words; the first letter is upper-cased."""
    return _fill(template, rng, topic)


def generate_article(rng: random.Random, *, num_paragraphs: int | None = None) -> Article:
    """One article: 4..7 paragraphs of 3..6 sentences, templates used at most once each."""
    topic = rng.choice(TOPICS)
    num_paragraphs = num_paragraphs or rng.randint(4, 7)
    order = list(range(len(TEMPLATES)))
    rng.shuffle(order)
    paragraphs = []
    used = 0
    for _ in range(num_paragraphs):
        count = rng.randint(3, 6)
        picks = order[used : used + count]
        used += count
        if not picks:
            break
        paragraphs.append(" ".join(_fill(TEMPLATES[i], rng, topic) for i in picks))
    title = _fill(rng.choice(TITLE_TEMPLATES), rng, topic)
    author = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    return Article(title=title, author=author, topic=topic.name, paragraphs=tuple(paragraphs))


# -- made-up names (the sample web's "naming" pages, the LM's pretraining text, the novel-names eval) --

NAME_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "bl", "dr", "gl", "sn", "tr")
NAME_VOWELS = ("a", "e", "i", "o", "u")
NAME_CODAS = ("x", "g", "p", "k", "b", "d", "m", "n")
_HELD_OUT_MODULUS = 4


def is_held_out_name(name: str) -> bool:
    """Whether a made-up name belongs to the evaluation's share (a quarter of all names, fixed by a
    hash of the name): those never appear in training text or pages."""
    return zlib.crc32(name.encode("ascii")) % _HELD_OUT_MODULUS == 0


def made_up_name(rng: random.Random, *, held_out: bool = False) -> str:
    """A pronounceable made-up word of two syllables ("tobax", "snilup"), from the training share
    of the name space, or with `held_out` from the evaluation's share (disjoint)."""
    while True:
        name = (rng.choice(NAME_ONSETS) + rng.choice(NAME_VOWELS) + rng.choice(NAME_ONSETS)
                + rng.choice(NAME_VOWELS) + rng.choice(NAME_CODAS))
        if is_held_out_name(name) == held_out:
            return name


def distinct_names(rng: random.Random, count: int, *, held_out: bool = False) -> list[str]:
    """`count` made-up names that differ in their first letter (so they differ in their first token)."""
    if count > len(set(o[0] for o in NAME_ONSETS)):
        raise ValueError(f"at most {len(set(o[0] for o in NAME_ONSETS))} names with distinct first letters")
    names: list[str] = []
    while len(names) < count:
        name = made_up_name(rng, held_out=held_out)
        if all(name[0] != other[0] for other in names):
            names.append(name)
    return names
