"""CORGI's rule-checked constraints: verdicts, scores and critiques, one table per constraint."""

import pytest

from mulligan.envs.verifiers.constraints import (
    CONSTRAINT_IDS,
    CORGI_IDS,
    FAMILIES,
    check_completion,
    check_concepts,
    check_constraint,
    check_constraints,
    check_lipogram,
    check_max_word_length,
    check_pangram,
    combine_critiques,
    describe_constraint,
    normalize_constraint,
    word_forms,
)

PREFIX = "The old man walked slowly toward"


@pytest.mark.parametrize(
    ("response", "holds", "score"),
    [
        ("the quiet river", False, 0.2),  # right last word, wrong count
        ("the bend of the river", True, 1.0),
        ("the bend of the river.", True, 1.0),  # punctuation is not a word
        ("the bend of the lake", False, 0.8),  # right count, wrong last word
        ("a very long way to the lake", False, 0.0),
        ("", False, 0.0),
        (PREFIX + " the bend of the river", True, 1.0),  # a repeated prefix is not counted
        ("the bend of the RIVER!", True, 1.0),  # case does not matter
        ("well-known bend of the river", True, 1.0),  # a hyphenated word counts once
        ("don't cross the old river", True, 1.0),  # so does a contraction
    ],
)
def test_completion_scores_count_and_last_word(response, holds, score):
    result = check_completion(response, PREFIX, 5, "river")
    assert result.holds is holds
    assert result.score == pytest.approx(score)
    assert (result.critique == "") is holds


def test_completion_critique_names_both_counts():
    result = check_completion("one two three four five six seven", PREFIX, 5, "seven")
    assert result.critique == (
        "You completed the sentence with 7 words. However you should complete the sentence with 5 words."
    )
    wrong_end = check_completion("one two three four five", PREFIX, 5, "river")
    assert wrong_end.critique == (
        "Your completion ends with the word 'five'. However it should end with the word 'river'."
    )
    empty = check_completion("", PREFIX, 1, "river")
    assert "0 words" in empty.critique and "without any word" in empty.critique


@pytest.mark.parametrize(
    ("word", "form"),
    [
        ("river", "rivers"), ("box", "boxes"), ("city", "cities"), ("leaf", "leaves"), ("knife", "knives"),
        ("bake", "baked"), ("bake", "baking"), ("stop", "stopped"), ("stop", "stopping"), ("carry", "carried"),
        ("lie", "lying"), ("run", "ran"), ("run", "running"), ("go", "went"), ("go", "goes"), ("child", "children"),
        ("person", "people"), ("mouse", "mice"), ("write", "written"), ("fly", "flew"), ("fly", "flies"),
    ],
)
def test_word_forms_cover_regular_and_irregular_inflections(word, form):
    assert form in word_forms(word)


def test_word_forms_do_not_match_unrelated_words():
    assert "rover" not in word_forms("river")
    assert "ran" not in word_forms("rain")


@pytest.mark.parametrize(
    ("response", "concepts", "missing"),
    [
        ("The children ran along the rivers with lanterns.", ["child", "run", "river", "lantern"], []),
        ("A dog sat by the river.", ["river", "lantern"], ["lantern"]),
        ("Nothing here.", ["river", "lantern"], ["river", "lantern"]),
        ("The river's edge was dark.", ["river"], []),  # possessive
        ("We crossed the ice cream shop.", ["ice cream"], []),  # phrases match consecutively
        ("The cream was ice cold.", ["ice cream"], ["ice cream"]),
        ("", ["river"], ["river"]),
    ],
)
def test_concepts_table(response, concepts, missing):
    result = check_concepts(response, concepts)
    assert result.holds is (not missing)
    assert result.score == pytest.approx(1 - len(missing) / len(concepts))
    if missing:
        assert result.critique == f"You didn't use the following concepts: {', '.join(missing)}."


def test_concepts_feedback_message_matches_corgi_wording():
    result = check_concepts("Nothing at all.", ["river", "lantern"])
    assert result.critique == "You didn't use the following concepts: river, lantern."


@pytest.mark.parametrize(
    ("response", "holds", "missing"),
    [
        ("The quick brown fox jumps over the lazy dog", True, ""),
        ("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG", True, ""),
        ("The quick brown fox jumps over the dog", False, "a, l, y, z"),
        ("", False, "a, b"),
        ("Thé quíck brown fox jumps over the lazy dog", False, "i"),  # accented letters do not count
    ],
)
def test_pangram_table(response, holds, missing):
    result = check_pangram(response)
    assert result.holds is holds
    assert 0.0 <= result.score <= 1.0
    assert (result.score == 1.0) is holds
    for letter in missing.split(", ") if missing else []:
        assert letter in result.critique.split("letters ")[1]


@pytest.mark.parametrize(
    ("response", "letter", "holds", "critique"),
    [
        ("A cat sat on a mat.", "e", True, ""),
        ("The cat sat.", "e", False, "You used the letter 'e' 1 time. However you should not use it at all."),
        ("EEE", "e", False, "You used the letter 'e' 3 times. However you should not use it at all."),
        ("", "z", True, ""),
    ],
)
def test_lipogram_table(response, letter, holds, critique):
    result = check_lipogram(response, letter)
    assert (result.holds, result.critique) == (holds, critique)
    assert result.score == float(holds)


@pytest.mark.parametrize(
    ("response", "max_length", "holds"),
    [("A cat sat on a mat.", 3, True), ("A wonderful day.", 5, False), ("well-being", 10, True), ("", 1, True)],
)
def test_max_word_length_table(response, max_length, holds):
    result = check_max_word_length(response, max_length)
    assert result.holds is holds
    if not holds:
        assert result.critique.startswith(f"The following words are longer than {max_length} letters: wonderful")


def test_every_id_is_dispatched_and_described():
    assert len(CONSTRAINT_IDS) == len(CORGI_IDS) + 25
    assert FAMILIES[:4] == ("completion", "concepts", "letters", "words")
    examples = {
        "completion:word_count_ending": {"prefix": PREFIX, "num_words": 2, "last_word": "home"},
        "concepts:use_all": {"concepts": ["river"]},
        "letters:pangram": {},
        "letters:lipogram": {"letter": "z"},
        "words:max_word_length": {"max_length": 6},
    }
    for cid, kwargs in examples.items():
        assert describe_constraint(cid, kwargs)
        result = check_constraint(cid, "walking home", kwargs)
        assert 0.0 <= result.score <= 1.0 and result.constraint_id == cid


@pytest.mark.parametrize(
    ("cid", "kwargs", "message"),
    [
        ("completion:word_count_ending", {"prefix": "x", "num_words": 0, "last_word": "home"}, "positive int"),
        ("completion:word_count_ending", {"prefix": "x", "num_words": 3}, "last_word"),
        ("completion:word_count_ending", {"prefix": "x", "num_words": 3, "last_word": "two words"}, "single word"),
        ("concepts:use_all", {"concepts": "river"}, "list"),
        ("concepts:use_all", {"concepts": []}, "non-empty"),
        ("letters:lipogram", {"letter": "ab"}, "one letter"),
        ("words:max_word_length", {"max_length": True}, "positive int"),
        ("nope:nothing", {}, "unknown constraint id"),
        ("keywords:frequency", {"keyword": "a", "frequency": 2, "relation": "exactly"}, "relation"),
    ],
)
def test_bad_arguments_are_rejected_with_the_fix(cid, kwargs, message):
    with pytest.raises(ValueError, match=message):
        normalize_constraint(cid, kwargs)


def test_check_constraints_keeps_order_and_combines_critiques():
    ids = ["letters:lipogram", "concepts:use_all", "punctuation:no_comma"]
    kwargs = [{"letter": "q"}, {"concepts": ["river", "lantern"]}, {}]
    results = check_constraints(ids, kwargs, "A quiet river, at night.")
    assert [r.holds for r in results] == [False, False, False]
    critique = combine_critiques(results)
    assert critique.index("letter 'q'") < critique.index("lantern") < critique.index("comma")
    with pytest.raises(ValueError, match="kwargs"):
        check_constraints(ids, kwargs[:2], "x")


def test_checkers_survive_hostile_input():
    hostile = ["\x00" * 10, "a" * 1_000_000, "\\frac{" * 10_000, "💥" * 1000, "\ud800", "[" * 5000 + "]"]
    for text in hostile:
        for cid in CORGI_IDS:
            kwargs = {
                "completion:word_count_ending": {"prefix": PREFIX, "num_words": 3, "last_word": "home"},
                "concepts:use_all": {"concepts": ["river"]},
                "letters:lipogram": {"letter": "a"},
                "words:max_word_length": {"max_length": 5},
            }.get(cid, {})
            result = check_constraint(cid, text, kwargs)
            assert 0.0 <= result.score <= 1.0
