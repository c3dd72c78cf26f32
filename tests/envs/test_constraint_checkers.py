"""Rule-checked constraints (CORGI's and mulligan's): verdicts, scores and critiques, one table per constraint."""

import pytest

from mulligan.envs.verifiers.constraints import (
    CONSTRAINT_IDS,
    CORGI_IDS,
    EXTRA_IDS,
    FAMILIES,
    check_cmg_hard,
    check_completion,
    check_concepts,
    check_constraint,
    check_constraints,
    check_lipogram,
    check_max_word_length,
    check_num_planning,
    check_panagram,
    check_pangram,
    combine_critiques,
    corgi_primer,
    corgi_prompt,
    describe_constraint,
    is_english_word,
    join_critiques,
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
        ("river", "rivers"),
        ("box", "boxes"),
        ("city", "cities"),
        ("leaf", "leaves"),
        ("knife", "knives"),
        ("bake", "baked"),
        ("bake", "baking"),
        ("stop", "stopped"),
        ("stop", "stopping"),
        ("carry", "carried"),
        ("lie", "lying"),
        ("run", "ran"),
        ("run", "running"),
        ("go", "went"),
        ("go", "goes"),
        ("child", "children"),
        ("person", "people"),
        ("mouse", "mice"),
        ("write", "written"),
        ("fly", "flew"),
        ("fly", "flies"),
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


EXAMPLE_KWARGS = {
    "corgi:num_planning": {"prefix": "Where", "num_words": 3, "last_word": "Vinci"},
    "corgi:cmg_hard": {"concepts": ["river", "lantern"]},
    "corgi:panagram": {"letters": ["a", "e", "r", "k", "b"]},
    "completion:word_count_ending": {"prefix": PREFIX, "num_words": 2, "last_word": "home"},
    "concepts:use_all": {"concepts": ["river"]},
    "letters:pangram": {},
    "letters:lipogram": {"letter": "z"},
    "words:max_word_length": {"max_length": 6},
}


def test_every_id_is_dispatched_and_described():
    assert CORGI_IDS == ("corgi:num_planning", "corgi:cmg_hard", "corgi:panagram")
    assert len(CONSTRAINT_IDS) == len(CORGI_IDS) + len(EXTRA_IDS) + 25
    assert FAMILIES[:5] == ("corgi", "completion", "concepts", "letters", "words")
    assert set(EXAMPLE_KWARGS) == set(CORGI_IDS + EXTRA_IDS)
    for cid, kwargs in EXAMPLE_KWARGS.items():
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
        ("corgi:panagram", {"letters": ["ab"]}, "single characters"),
        ("corgi:panagram", {"letters": "abc"}, "single characters"),
        ("corgi:num_planning", {"prefix": "x", "num_words": float("inf"), "last_word": "y"}, "positive int"),
        ("corgi:cmg_hard", {"concepts": ["river"], "extra": 1}, "unknown argument"),
        ("corgi:num_planning", {"prefix": "x", "N": 3, "last_word": "y"}, "unknown argument"),
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
    hostile = [
        "\x00" * 10,
        "a" * 1_000_000,
        "\\frac{" * 10_000,
        "💥" * 1000,
        "\ud800",
        "[" * 5000 + "]",
        "Σ.Σ " * 1000,
        "- Output: Word: " * 1000,
    ]
    for text in hostile:
        for cid, kwargs in EXAMPLE_KWARGS.items():
            for primed in (False, True):
                result = check_constraint(cid, text, kwargs, primed=primed)
                assert 0.0 <= result.score <= 1.0
                assert len(result.critique) < 2000  # a critique quotes a huge word by its start


# --------------------------------------------------------------------------------------------------
# CORGI's tasks, as CORGI's critics (critiques.py) score them
# --------------------------------------------------------------------------------------------------


def test_critiques_are_joined_as_corgis_critic_joins_them():
    assert join_critiques(["One.", "", "Two here.", "Three."]) == "One. In addition, two here. Moreover, three."
    assert join_critiques([]) == ""
    results = check_constraints(
        ["letters:lipogram", "corgi:num_planning"],
        [{"letter": "q"}, EXAMPLE_KWARGS["corgi:num_planning"]],
        "quite far Leonardo",
    )
    assert combine_critiques(results) == (
        "You used the letter 'q' 1 time. However you should not use it at all. In addition, the last word "
        'should be "Vinci" and not "Leonardo".'
    )


@pytest.mark.parametrize(
    ("response", "primed", "score", "messages"),
    [
        # The official example: N = 3, last word Vinci, prefix Where.
        (" is Da Vinci?", True, 1.0, ()),
        ("is Da Vinci?", True, 1.0, ()),
        # Only the first sentence counts: the response is cut after its first period.
        (" is Da Vinci. And then much more text follows here", True, 1.0, ()),
        # Case matters, as in the official check.
        (" is da vinci?", True, 0.8, ('The last word should be "Vinci" and not "vinci".',)),
        # Words are space-separated tokens with a letter or digit; "--" is not one.
        (" is -- Da Vinci?", True, 1.0, ()),
        (
            " was painted by Leonardo?",
            True,
            0.0,
            (
                "You completed the sentence with 4 words. However you should complete the sentence with 3 words.",
                'The last word should be "Vinci" and not "Leonardo".',
            ),
        ),
        (
            "",
            True,
            0.0,
            (
                "You completed the sentence with 0 words. However you should complete the sentence with 3 words.",
                'The last word should be "Vinci" and not "".',
            ),
        ),
        # Unprimed chat answers repeat the primer; it is dropped by default ...
        ("- Output: Where is Da Vinci?", False, 1.0, ()),
        ("Where is Da Vinci?", False, 1.0, ()),
        ("WHERE is Da Vinci?", False, 1.0, ()),
        # ... and counted when the response is the primed continuation (the official reading).
        (
            "Where is Da Vinci?",
            True,
            0.2,
            ("You completed the sentence with 4 words. However you should complete the sentence with 3 words.",),
        ),
    ],
)
def test_num_planning_scores_as_the_official_critic(response, primed, score, messages):
    result = check_num_planning(response, "Where", 3, "Vinci", primed=primed)
    assert result.score == pytest.approx(score)
    assert result.messages == messages
    assert result.holds is (score == 1.0)


def test_num_planning_never_raises_on_case_folding_prefixes():
    for prefix in ["Σ.Σ", "ß ẞ", "İstanbul İ", "ﬁne Straße", "ΑΣ ΣΑ"]:
        for response in [prefix, prefix.lower(), prefix.upper(), prefix.casefold(), prefix + " a b home"]:
            for cid in ("corgi:num_planning", "completion:word_count_ending"):
                result = check_constraint(cid, response, {"prefix": prefix, "num_words": 3, "last_word": "home"})
                assert 0.0 <= result.score <= 1.0
    # The repeated prefix is cut where it ends in the original text.
    result = check_completion("İİ Σ.Σ ran far home", "İİ Σ.Σ", 3, "home")
    assert result.holds


@pytest.mark.parametrize(
    ("response", "missing"),
    [
        ("The children ran along the river with lanterns.", []),
        ("- Output: A lantern lit the rivers.", []),
        ("A lantern. The river came later.", ["river"]),  # only the first sentence counts
        ("Nothing here.", ["river", "lantern"]),
    ],
)
def test_cmg_hard_is_all_or_nothing(response, missing):
    result = check_cmg_hard(response, ["river", "lantern"])
    assert result.score == (0.0 if missing else 1.0)
    expected = (f"You are missing the following concepts: {', '.join(missing)}.",) if missing else ()
    assert result.messages == expected


@pytest.mark.parametrize(
    ("response", "score", "messages"),
    [
        (" baker.", 1.0, ()),
        ("- Output: Word: baker.", 1.0, ()),
        ("Word: brake\nIt uses every letter.", 1.0, ()),
        (" bake", 2 / 3, ('"bake" doesn\'t have the letter r.',)),
        (" bark", 2 / 3, ('"bark" doesn\'t have the letter e.',)),
        (" braked", 2 / 3, ('"braked" has the letter d which is not on the list.',)),
        (" barker", 1.0, ()),  # letters may repeat
        (" kbrae", 2 / 3, ('"kbrae" is not a valid word in English.',)),
        (
            " bread",
            1 / 3,
            ('"bread" doesn\'t have the letter k.', '"bread" has the letter d which is not on the list.'),
        ),
        (
            " cup",
            1 / 3,
            (
                '"cup" doesn\'t have the letters a, b, e, k, r.',
                '"cup" has the letters: c, p, u which are not on the list.',
            ),
        ),
        ("", 0.0, ("The output format is incorrect. Please output only the panagram word.",)),
        # Case-sensitive, as the official set comparison: "B" is not "b".
        (
            " Baker",
            1 / 3,
            ('"Baker" doesn\'t have the letter b.', '"Baker" has the letter B which is not on the list.'),
        ),
    ],
)
def test_panagram_is_one_english_word_of_exactly_the_letters(response, score, messages):
    result = check_panagram(response, ["a", "e", "r", "k", "b"])
    assert result.score == pytest.approx(score)
    assert result.messages == messages


def test_panagram_examples_of_the_official_prompt_hold():
    assert check_panagram(" jelly.", ["y", "e", "j", "l"]).holds
    assert check_panagram(" cool.", ["o", "c", "l"]).holds


def test_english_words_come_from_an_offline_list_with_inflections():
    for word in ["baker", "jelly", "cool", "colour", "cats", "baked", "running", "children", "flies"]:
        assert is_english_word(word), word
    for word in ["kbrae", "xqzv", "", "café", "baker1", "qwrtyed"]:
        assert not is_english_word(word), word


def test_corgi_prompts_carry_the_two_official_examples_and_the_input_line():
    prompt = corgi_prompt("corgi:num_planning", {"prefix": "He said", "num_words": 4, "last_word": "home"})
    assert prompt.startswith("# Instruction\n\nYou are given a number N, a prefix and a last word.")
    assert '- Input: "N = 3 ; Last word = Vinci ; Prefix = Where"\n- Output: Where is Da Vinci?' in prompt
    assert "- Output: This is a story about a young girl’s redemption in a small town." in prompt
    assert prompt.endswith('# Your Task \n\n- Input: "N = 4 ; Last word = home ; Prefix = He said"')
    assert corgi_primer("corgi:num_planning", {"prefix": "He said", "num_words": 4, "last_word": "home"}) == (
        "- Output: He said"
    )
    panagram = corgi_prompt("corgi:panagram", {"letters": ["a", "e", "r", "k", "b"]})
    assert panagram.endswith('- Input: "Letters: [a, e, r, k, b]"')
    assert "- Output: Word: jelly." in panagram and corgi_primer("corgi:panagram", {"letters": ["a"]}) == (
        "- Output: Word:"
    )
    cmg = corgi_prompt("corgi:cmg_hard", {"concepts": ["vest", "snow"]})
    assert cmg.endswith('- Input: "vest, snow"') and "*all* the required words" in cmg
    assert corgi_primer("corgi:cmg_hard", {"concepts": ["vest"]}) == "- Output:"
