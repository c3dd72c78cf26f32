import pytest

from mulligan.envs.verifiers.qa import (
    CORRECT,
    FINE_GRAINED_LABELS,
    MOSTLY_CORRECT,
    MOSTLY_INCORRECT,
    TOTALLY_INCORRECT,
    exact_match,
    f1_score,
    fine_grained_label,
    normalize_answer,
    normalize_yes_no,
    qa_score,
)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Beatles", "beatles"),
        ("  a   Tale of  Two Cities ", "tale of two cities"),
        ("An apple.", "apple"),
        ("U.S.A.", "usa"),
        ("Rock 'n' Roll!", "rock n roll"),
        ("theatre", "theatre"),  # "the" inside a word is not an article
        ("the, the", ""),  # punctuation goes first, then both articles
        ("Ed\tWood\n(film)", "ed wood film"),
        ("Café Müller", "café müller"),  # only ASCII punctuation is stripped, as in the official script
        ("1,000", "1000"),
        ("", ""),
    ],
)
def test_normalize_answer_follows_the_official_steps(text, normalized):
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    ("prediction", "gold", "em", "f1"),
    [
        ("The Beatles", "beatles", 1.0, 1.0),
        ("Ed Wood", "Ed Wood (film)", 0.0, 0.8),  # P=1, R=2/3
        ("Scott Derrickson the director", "Scott Derrickson", 0.0, 0.8),  # P=2/3, R=1
        ("Paris France", "Lyon", 0.0, 0.0),
        ("new new york", "new york", 0.0, 0.8),  # a repeated token is shared only as often as gold has it
        # Official special cases: yes / no / noanswer only count when equal.
        ("yes", "yes", 1.0, 1.0),
        ("Yes.", "yes", 1.0, 1.0),
        ("yes", "no", 0.0, 0.0),
        ("yes it is", "yes", 0.0, 0.0),
        ("yes", "yes it is", 0.0, 0.0),
        ("noanswer", "no answer", 0.0, 0.0),
        ("no", "no way", 0.0, 0.0),
        ("", "", 1.0, 0.0),  # the official F1 of two empty answers is 0 although EM is 1
        ("", "Tallow", 0.0, 0.0),
    ],
)
def test_exact_match_and_f1_table(prediction, gold, em, f1):
    assert float(exact_match(prediction, gold)) == em
    assert f1_score(prediction, gold) == pytest.approx(f1)
    assert qa_score(prediction, gold).em == em


def test_precision_and_recall_are_token_ratios():
    score = qa_score("the river tallow bridge", "River Tallow")
    assert score.precision == pytest.approx(2 / 3)
    assert score.recall == pytest.approx(1.0)
    assert score.f1 == pytest.approx(0.8)


def test_f1_is_symmetric_and_bounded():
    pairs = [("a b c", "b c d e"), ("x", "x y z"), ("one two", "two one")]
    for a, b in pairs:
        assert f1_score(a, b) == pytest.approx(f1_score(b, a))
        assert 0.0 <= f1_score(a, b) <= 1.0
    assert f1_score("two one", "one two") == 1.0  # bag of tokens: order does not matter


@pytest.mark.parametrize(
    ("f1", "label"),
    [
        (0.0, TOTALLY_INCORRECT),
        (0.01, MOSTLY_INCORRECT),
        (0.399, MOSTLY_INCORRECT),
        (0.4, MOSTLY_CORRECT),
        (0.99, MOSTLY_CORRECT),
        (1.0, CORRECT),
        (1, CORRECT),
        (0, TOTALLY_INCORRECT),
    ],
)
def test_nat_fine_grained_labels(f1, label):
    assert fine_grained_label(f1) == label


def test_labels_are_ordered_and_reject_bad_input():
    assert FINE_GRAINED_LABELS == ("[Totally Incorrect]", "[Mostly Incorrect]", "[Mostly Correct]", "[Correct]")
    for bad in (-0.1, 1.5, float("nan"), "1", True, None):
        with pytest.raises(ValueError, match="f1 must be"):
            fine_grained_label(bad)


def test_label_of_a_real_answer_pair():
    assert fine_grained_label(f1_score("Ed Wood", "Ed Wood (film)")) == MOSTLY_CORRECT
    assert fine_grained_label(f1_score("Tim Burton's Ed Wood biopic", "Ed Wood")) == MOSTLY_CORRECT
    assert fine_grained_label(f1_score("a film about many things by someone", "film noir")) == MOSTLY_INCORRECT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "Yes"),
        ("yes.", "Yes"),
        (" NO! ", "No"),
        ("no", "No"),
        ("maybe", None),
        ("yes no", None),
        ("", None),
        ("true", None),
    ],
)
def test_yes_no_normalisation(text, expected):
    assert normalize_yes_no(text) == expected


def test_megabyte_inputs_are_scored_quickly():
    big = "word " * 200_000
    assert 0.0 < f1_score(big, "word") < 0.01
