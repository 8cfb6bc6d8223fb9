"""MLLM answer → category list: realistic LLaVA-NeXT answer styles, normalisation, caps."""

import pytest

from pgov3d_core.labelling.parsing import grounding_prompt, normalize_item, parse_object_list, singularize

CASES = [
    # numbered list
    ("1. Chair\n2. Table\n3. Lamp\n4. Floor\n5. Wall", ["chair", "table", "lamp", "floor", "wall"]),
    # bulleted list with a lead-in and a closing sentence that are not items
    (
        "Here are the objects in the image:\n- Sofa\n- Coffee table\n- Cushions\n- Rug\nThese are the main objects.",
        ["sofa", "coffee table", "cushion", "rug"],
    ),
    # comma list with "and"
    ("chair, table, lamp and bookshelf", ["chair", "table", "lamp", "bookshelf"]),
    # a sentence with articles and counts
    ("There are a chair, two tables and a lamp.", ["chair", "table", "lamp"]),
    # markdown bold names followed by explanations
    (
        "1. **Chair**: a wooden chair near the desk\n2. **Desk**: white desk\n3. **Monitor** (black)",
        ["chair", "desk", "monitor"],
    ),
    # one item per line with trailing periods
    ("Chair.\nTable.\nWindow.", ["chair", "table", "window"]),
    # nested descriptions in parentheses
    ("a chair (wooden (oak)), a table (round), curtains", ["chair", "table", "curtain"]),
    # duplicates, plurals, case, irregulars and plural-only nouns
    (
        "Chairs, chair, tables, Table, boxes, shelves, glasses, people, stairs",
        ["chair", "table", "box", "shelf", "glasses", "person", "stairs"],
    ),
    # refusal / nothing
    ("None", []),
    ("No objects.", []),
    ("", []),
    # prose with a scene word and prepositions
    (
        "The image shows a living room with a sofa, a coffee table, and a TV on a stand.",
        ["sofa", "coffee table", "tv", "stand"],
    ),
    # "Objects:" header with stuff classes, which are kept
    ("Objects: bed, pillows, nightstand, lamp, ceiling, walls, floor.", [
        "bed", "pillow", "nightstand", "lamp", "ceiling", "wall", "floor",
    ]),
    # adjectives kept as written, quantifier phrases stripped, head of "X of Y" singularised
    (
        "Sure! The objects in this image are: a red chair, a stack of books, three cups of coffee, a pair of shoes.",
        ["red chair", "book", "cup of coffee", "shoe"],
    ),
    # asterisk bullets, multi-word names
    ("* Cabinet\n* Sink\n* Kitchen counter\n* Refrigerator", ["cabinet", "sink", "kitchen counter", "refrigerator"]),
    # a rambling sentence: no name-like fragment
    ("The image shows a very large number of things that I cannot really describe in words at all", []),
    # count suffixes
    ("chair x2, table (1), lamp 3", ["chair", "table", "lamp"]),
    # numbered with parentheses and semicolons, "etc."
    ("1) monitor; 2) keyboard; 3) mouse, etc.", ["monitor", "keyboard", "mouse"]),
]


@pytest.mark.parametrize(("answer", "expected"), CASES, ids=[f"style{i}" for i in range(len(CASES))])
def test_answer_styles(answer, expected):
    assert parse_object_list(answer) == expected


def test_gibberish_and_non_text_give_empty_lists():
    assert parse_object_list(",,,, ;; / &") == []
    assert parse_object_list(None) == []
    assert parse_object_list("   \n\n  ") == []
    assert parse_object_list("12. 13. 14.") == []


def test_long_lists_are_capped_in_order_of_mention():
    answer = ", ".join(f"object{i} box" for i in range(100))
    got = parse_object_list(answer, max_items=5)
    assert got == [f"object{i} box" for i in range(5)]
    numbered = "\n".join(f"{i}. thing{i} lamp" for i in range(1, 60))
    assert len(parse_object_list(numbered, max_items=40)) == 40


def test_long_items_are_dropped_by_max_words():
    answer = "chair, large old wooden dining table, lamp"
    assert parse_object_list(answer, max_words=4) == ["chair", "lamp"]
    assert "large old wooden dining table" in parse_object_list(answer, max_words=5)


def test_same_object_normalises_identically_across_styles():
    styles = ["- **Red chairs**", "2 red chairs.", "There are three red chairs", "Red Chair (x3)", "`red chair`"]
    assert [parse_object_list(s) for s in styles] == [["red chair"]] * len(styles)
    assert normalize_item("The Red Chairs!") == "red chair"


@pytest.mark.parametrize(
    ("plural", "singular"),
    [("chairs", "chair"), ("benches", "bench"), ("shelves", "shelf"), ("knives", "knife"), ("stoves", "stove"),
     ("glass", "glass"), ("bus", "bus"), ("cactus", "cactus"), ("batteries", "battery"), ("mattresses", "mattress"),
     ("clothes", "clothes"), ("boxes", "box"), ("dishes", "dish"), ("men", "man"), ("tv", "tv")],
)
def test_singularize(plural, singular):
    assert singularize(plural) == singular


def test_grounding_prompt_is_lower_case_dot_separated():
    assert grounding_prompt(["Chair", "coffee table", "lamp "]) == "chair. coffee table. lamp."
    assert grounding_prompt([]) == ""
