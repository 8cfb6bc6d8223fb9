"""Turning an MLLM's free-text answer into a clean list of object categories.

LLaVA-NeXT answers "list the objects" in many styles: numbered or bulleted lists, markdown
bold, comma lists with "and", whole sentences ("There are a chair, two tables and a lamp."),
names followed by explanations ("**Chair**: a wooden chair by the desk"), counts, parentheses.
Whatever the style, the output is what GroundingDINO gets as its prompt and what CLIP embeds,
so it must be a short, duplicate-free list of lower-case noun phrases.

Normalisation (one rule set, applied to every style so the same object always gives the same
text across frames, which the scene-level vocabulary of Stage 2 relies on):

* lower case; markdown (``**``, ``__``, backticks, headers), parentheses/brackets and their
  content, quotes and trailing punctuation removed;
* explanations after ``:`` / `` - `` / ``–`` dropped ("chair: wooden, by the desk" → "chair");
* leading articles, counts and quantifiers dropped ("a", "the", "two", "3", "several",
  "a pair of", "a stack of" …); "x2"-style counts dropped;
* plurals → singular on the head noun (the last word, or the word before " of ":
  "cups of coffee" → "cup of coffee"), with an irregular table and an invariant set
  ("glass", "clothes", "stairs" stay);
* adjectives are KEPT as written ("red chair" stays "red chair", not "chair"): they help
  GroundingDINO pick the right instance and CLIP embeds "red chair" next to "chair";
  duplicates are removed on the exact normalised text only;
* stuff classes ("floor", "wall", "ceiling") are kept like any other category;
* items longer than ``max_words`` words are sentences, not names, and are dropped, as are
  generic words ("objects", "items", "none", "image", "room" …) and fragments starting with a
  preposition or pronoun;
* the list is capped at ``max_items`` in order of first mention.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------- word tables

_IRREGULAR_PLURALS = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "feet": "foot",
    "teeth": "tooth", "mice": "mouse", "geese": "goose", "shelves": "shelf", "knives": "knife",
    "leaves": "leaf", "halves": "half", "wolves": "wolf", "scarves": "scarf", "loaves": "loaf",
    "wives": "wife", "lives": "life", "calves": "calf", "potatoes": "potato", "tomatoes": "tomato",
    "heroes": "hero", "echoes": "echo", "buses": "bus", "cacti": "cactus", "lenses": "lens",
    "canvases": "canvas", "dice": "die", "radii": "radius", "bookshelves": "bookshelf",
    "dominoes": "domino", "volcanoes": "volcano", "mangoes": "mango", "boxes": "box",
}
# Words that end in "s" but are singular, or are plural-only names in common vocabularies
# (ScanNet200 uses "stairs", "blinds", "clothes", "headphones").
_INVARIANT = {
    "clothes", "stairs", "pants", "jeans", "shorts", "scissors", "tongs", "binoculars", "glasses",
    "headphones", "earphones", "blinds", "news", "series", "species", "electronics", "tennis",
    "chess", "physics", "mathematics", "means", "bedclothes", "sweatpants", "trousers", "pliers",
    "goggles", "leggings", "overalls", "pajamas", "slacks", "tights", "sunglasses", "eyeglasses",
    "toiletries", "cosmetics", "supplies", "groceries", "dishes", "towels", "linens",
}
# Kept invariant only when they are the head noun of a plural-only reading; "dishes", "towels",
# "linens", "supplies" and "groceries" are collective nouns in household vocabularies but their
# singular is just as common, so they are singularised after all.
_INVARIANT -= {"dishes", "towels", "linens", "supplies", "groceries"}

_SINGULAR_S_ENDINGS = ("ss", "us", "is", "ous", "ics")

_NUMBER_WORDS = {
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "twenty", "dozen", "dozens", "hundreds",
}
_DETERMINERS = {
    "a", "an", "the", "some", "several", "many", "few", "various", "multiple", "numerous",
    "assorted", "different", "other", "another", "any", "each", "every", "this", "that", "these",
    "those", "its", "their", "his", "her", "our", "my", "your", "more", "most", "additional",
    "single", "couple", "lots", "lot", "plenty", "both", "possibly", "probably", "also", "maybe",
} | _NUMBER_WORDS
# "<quantifier> of X" → X ("a stack of books" → "book").
_QUANTIFIER_OF = re.compile(
    r"^(?:(?:a|an|the|some|two|three|several|many)\s+)?"
    r"(?:pair|pairs|set|sets|couple|group|groups|pile|piles|stack|stacks|number|lot|lots|bunch|"
    r"variety|assortment|collection|row|rows|series|plenty|handful|few|range|kind|kinds|type|types|"
    r"sort|sorts|array|cluster)\s+of\s+"
)
_GENERIC = {
    "object", "objects", "item", "items", "thing", "things", "stuff", "etc", "others", "other",
    "none", "nothing", "n/a", "na", "unknown", "no object", "no objects", "not applicable",
    "image", "picture", "photo", "photograph", "scene", "view", "background", "foreground",
    "room", "living room", "bedroom", "bathroom", "kitchen", "office", "interior", "indoor scene",
    "area", "space", "corner", "left", "right", "side", "middle", "center", "centre", "top",
    "bottom", "front", "back", "category", "categories", "object category", "object categories",
    "list", "answer", "description", "more", "and more", "and so on", "so on", "various objects",
    "furniture item", "household item", "miscellaneous", "misc", "yes", "no", "sure",
    "distinct object category", "distinct object", "visible object", "entity", "entities",
}
# A fragment that starts with one of these is a clause, not a name.
_BAD_FIRST_WORDS = {
    "with", "on", "in", "at", "by", "for", "from", "of", "to", "into", "onto", "near", "next",
    "under", "over", "above", "below", "behind", "beside", "besides", "between", "against",
    "it", "they", "he", "she", "we", "i", "you", "there", "here", "which", "that", "who", "what",
    "is", "are", "was", "were", "be", "been", "has", "have", "had", "can", "could", "may",
    "might", "appears", "seems", "looks", "located", "placed", "positioned", "visible",
    "please", "let", "note", "based", "however", "although", "while", "if", "as", "so", "but",
    "not", "no", "without",
}
# A name never contains these words anywhere; a fragment that does is a clause ("words at all").
_CLAUSE_WORDS = {
    "that", "which", "who", "whom", "whose", "is", "are", "was", "were", "be", "been", "being", "not",
    "cannot", "can't", "don't", "doesn't", "i", "you", "we", "they", "it", "very", "really", "all", "at",
    "there", "here", "seems", "appears", "would", "should", "could", "will", "describe", "see", "seen",
    "if", "then", "than", "because", "some", "any", "do", "does", "did",
}

# Lead-ins before the actual list in prose answers.
_LEAD_INS = [
    r"(?:sure|certainly|okay|ok|of course)[,!.]?\s*",
    r"(?:here\s+(?:is|are)\s+)?(?:a|the)\s+list\s+of\s+(?:the\s+)?(?:distinct\s+|visible\s+|main\s+)*"
    r"(?:object\s+)?(?:categories|objects|items)(?:\s+(?:visible|present|seen|shown|found))?"
    r"(?:\s+in\s+(?:the|this)\s+(?:image|picture|photo|scene|room))?\s*(?:is|are|include|includes)?\s*",
    r"(?:the\s+)?(?:distinct\s+|visible\s+|main\s+)*(?:object\s+)?(?:categories|objects|items)"
    r"(?:\s+(?:visible|present|seen|shown|found))?(?:\s+in\s+(?:the|this)\s+(?:image|picture|photo|scene|room))?"
    r"\s+(?:are|include|includes|is)\s*",
    r"(?:in\s+(?:the|this)\s+(?:image|picture|photo|scene|room)\s*,?\s*)?(?:there\s+(?:is|are)|i\s+(?:can\s+)?see"
    r"|we\s+(?:can\s+)?see|you\s+can\s+see)\s*",
    r"(?:the|this)\s+(?:image|picture|photo|scene|room)\s+(?:shows|contains|features|includes|depicts|has"
    r"|displays|presents)\s*",
]
_LEAD_IN_RE = re.compile(r"^(?:" + "|".join(_LEAD_INS) + r")", re.IGNORECASE)

_LIST_MARKER = re.compile(r"^\s*(?:\d{1,3}\s*[.):]|\(\d{1,3}\)|[-*•+·▪◦‣]|[a-z][.)](?=\s))\s*")
_SEPARATORS = re.compile(
    r"\s*(?:[,;/|•]|\band\b|&|\bor\b|\bplus\b|\bas well as\b|\balong with\b|\bsuch as\b|\bincluding\b"
    r"|\blike\b|\be\.g\.|\bi\.e\.|\bwith\b|\bon top of\b|\bon\b|\bnext to\b|\bnear\b|\bbeside\b"
    r"|\bbehind\b|\bunder\b|\bunderneath\b|\babove\b|\bbelow\b|\bin front of\b|\bagainst\b|\bin\b"
    r"|\binside\b|\bbetween\b|\bleaning\b|\bhanging\b|\bplaced\b|\blocated\b|\bsitting\b|\bstanding\b)\s*",
    re.IGNORECASE,
)
_EXPLANATION = re.compile(r"\s*(?::|\s-\s|\s–\s|\s—\s|=).*$")
_PARENS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]|\{[^{}]*\}")
_COUNT_SUFFIX = re.compile(r"\s*(?:\bx\s*\d+|\d+\s*x|\bx\d+|\(\d+\)|\d+)\s*$")
_MARKDOWN = re.compile(r"\*\*|__|`+|^#+\s*|(?<!\w)\*(?=\S)|(?<=\S)\*(?!\w)", re.MULTILINE)


# --------------------------------------------------------------------------- helpers


def singularize(word: str) -> str:
    """English plural → singular for one lower-case word (rule-based; see module docstring)."""
    w = word.lower()
    if w in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[w]
    if len(w) <= 3 or w in _INVARIANT:
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "ches", "shes", "xes", "zzes")):
        return w[:-2]
    if w.endswith(_SINGULAR_S_ENDINGS):
        return w
    if w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def _singularize_head(phrase: str) -> str:
    words = phrase.split()
    if not words:
        return phrase
    head = words.index("of") - 1 if "of" in words[1:] else len(words) - 1
    words[head] = singularize(words[head])
    return " ".join(words)


def normalize_item(text: str) -> str:
    """One candidate name → its normalised form ('' when nothing name-like is left)."""
    t = _normalize_text(text)
    return "" if t in _GENERIC else t


def normalize_label(text: str) -> str:
    """A grounded entity label → its normalised form: the same text rules as `normalize_item`
    (case, punctuation, articles, counts, plural → singular) but generic words are kept. The
    generic filter is for parsing an MLLM answer; a label that owns pixels in a frame has already
    been accepted as an object, and dropping it later would lose its points even when its name is
    as generic as "picture" or "painting" (Stage 2's scene vocabulary)."""
    return _normalize_text(text)


def _normalize_text(text: str) -> str:
    t = _MARKDOWN.sub("", text)
    prev = None
    while prev != t:  # nested parentheses: "(a (b))"
        prev, t = t, _PARENS.sub(" ", t)
    t = t.replace("(", " ").replace(")", " ")
    t = _EXPLANATION.sub("", t)
    t = t.lower().replace("’", "'")
    t = re.sub(r"[\"“”‘]|'(?!s\b)", " ", t)
    t = re.sub(r"[^\w\s'/-]", " ", t)  # remaining punctuation (periods, !, ?, …)
    t = re.sub(r"\s+", " ", t).strip(" -'/_")
    t = _COUNT_SUFFIX.sub("", t).strip()
    changed = True
    while changed and t:
        changed = False
        m = _QUANTIFIER_OF.match(t)
        if m:
            t, changed = t[m.end():], True
        first, _, rest = t.partition(" ")
        if rest and (first in _DETERMINERS or first.isdigit()):
            t, changed = rest, True
    if not t or t in _DETERMINERS or not re.search(r"[a-z]", t):
        return ""
    return _singularize_head(t)


def _strip_lead_in(segment: str) -> str:
    s = segment.strip()
    for _ in range(3):  # "Sure! The image shows a …"
        m = _LEAD_IN_RE.match(s)
        if not m or m.end() == 0:
            break
        s = s[m.end():].lstrip(" :,-")
    return s


def _segments(text: str) -> list[str]:
    """Candidate fragments of an answer: list items when it has a list, else prose clauses."""
    text = _MARKDOWN.sub("", text.replace("\r", "\n"))
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    items = [_LIST_MARKER.sub("", ln, count=1) for ln in lines if _LIST_MARKER.match(ln)]
    if items:
        # A list: the prose around it ("Here are the objects:", "These are the main ones.") is not.
        return items
    out: list[str] = []
    for line in lines:
        # "The objects are: sofa, table." → what follows the colon is the list.
        if ":" in line:
            head, _, tail = line.partition(":")
            line = tail if tail.strip() else head
        for sentence in re.split(r"(?<=[.!?])\s+|\.\s*$", line):
            if sentence.strip():
                out.append(_strip_lead_in(sentence))
    return out


def parse_object_list(text: str | None, max_items: int = 40, max_words: int = 4) -> list[str]:
    """The object categories named in an MLLM answer, normalised, de-duplicated, capped.

    Never raises on odd input: gibberish or a refusal gives an empty list (the caller logs it
    and the frame gets no entities)."""
    if not text or not text.strip() or max_items <= 0:
        return []
    result: list[str] = []
    seen: set[str] = set()
    for segment in _segments(text):
        segment = _EXPLANATION.sub("", _PARENS.sub(" ", segment))
        for piece in _SEPARATORS.split(segment):
            piece = _strip_lead_in(piece) if piece else piece
            if not piece:
                continue
            name = normalize_item(piece)
            if not name:
                continue
            words = name.split()
            if len(words) > max_words or words[0] in _BAD_FIRST_WORDS or _CLAUSE_WORDS.intersection(words):
                continue
            if name not in seen:
                seen.add(name)
                result.append(name)
                if len(result) >= max_items:
                    return result
    return result


def grounding_prompt(categories: list[str]) -> str:
    """GroundingDINO's text prompt: lower-case categories separated by '. ' and ending with '.'."""
    return "".join(f"{c.strip().lower()}. " for c in categories).rstrip()
