import json
import re

import pytest

from mulligan.envs.generators.world import (
    HOTPOTQA_BRIDGE_TEMPLATES,
    HOTPOTQA_COMPARISON_TEMPLATES,
    STRATEGYQA_TEMPLATES,
    WorldConfig,
    corpus_paragraphs,
    generate_hotpotqa_task,
    generate_strategyqa_task,
)
from mulligan.envs.verifiers.qa import exact_match

CONFIG = WorldConfig()
HOTPOT = [generate_hotpotqa_task(CONFIG, 3, i) for i in range(200)]
STRATEGY = [generate_strategyqa_task(CONFIG, 3, i) for i in range(200)]


def test_tasks_are_pure_functions_of_config_seed_and_index():
    assert generate_hotpotqa_task(CONFIG, 3, 17) == HOTPOT[17]
    assert generate_strategyqa_task(CONFIG, 3, 17) == STRATEGY[17]
    # Independent of generation order, and different across seeds and indices.
    assert generate_hotpotqa_task(CONFIG, 3, 5) == HOTPOT[5]
    assert generate_hotpotqa_task(CONFIG, 4, 17) != HOTPOT[17]
    assert len({t["question"] for t in HOTPOT}) > 190


def test_records_are_valid_hotpotqa_format_and_json():
    for task in HOTPOT + STRATEGY:
        assert json.loads(json.dumps(task)) == task
        titles = [title for title, _ in task["context"]]
        assert len(titles) == len(set(titles)), "titles are unique within a task"
        gold_titles = {title for title, _ in task["supporting_facts"]}
        assert len(titles) == len(gold_titles) + CONFIG.num_distractors
        sentences = dict(task["context"])
        for title, index in task["supporting_facts"]:
            assert 0 <= index < len(sentences[title])
        assert task["answer"] and task["question"].endswith("?")


def test_answers_are_supported_by_the_gold_sentences():
    for task in HOTPOT:
        sentences = dict(task["context"])
        gold_text = " ".join(sentences[t][i] for t, i in task["supporting_facts"])
        answer = task["answer"]
        if task["type"] == "bridge":
            assert answer in gold_text, (task["question"], answer, gold_text)
            # The answer is not given away by the first hop alone.
            first_title = task["supporting_facts"][0][0]
            first_facts = [sentences[first_title][i] for t, i in task["supporting_facts"] if t == first_title]
            assert answer not in " ".join(first_facts)
        elif answer in ("yes", "no"):
            assert "same" in task["question"]
        else:
            assert answer in task["question"] and answer in {t for t, _ in task["supporting_facts"]}


def test_comparison_answers_follow_the_dates_in_the_paragraphs():
    checked = 0
    for task in HOTPOT:
        question = task["question"]
        if not question.startswith(("Which was founded first", "Which was formed first", "Who was born first")):
            continue
        sentences = dict(task["context"])
        years = {}
        for title, index in task["supporting_facts"]:
            years[title] = int(re.findall(r"\b(1[5-9]\d\d|20[0-2]\d)\b", sentences[title][index])[-1])
        assert task["answer"] == min(years, key=years.get)
        checked += 1
    assert checked > 10


def test_mix_of_question_types_and_templates():
    types = [t["type"] for t in HOTPOT]
    assert 0.15 < types.count("comparison") / len(types) < 0.45
    yes_no = [t["answer"] for t in STRATEGY]
    assert 0.35 < yes_no.count("Yes") / len(yes_no) < 0.65
    only = WorldConfig(templates=("same_birth_city",))
    for i in range(20):
        task = generate_hotpotqa_task(only, 0, i)
        assert task["question"].startswith("Were ") and task["answer"] in ("yes", "no")


def test_distractors_share_names_and_types_with_gold_documents():
    sharing = 0
    for task in HOTPOT:
        gold = {t for t, _ in task["supporting_facts"]}
        gold_words = {w for t in gold for w in t.split() if w not in ("The", "of", "the")}
        others = [t for t, _ in task["context"] if t not in gold]
        sharing += any(set(t.split()) & gold_words for t in others)
    assert sharing / len(HOTPOT) > 0.9


def test_distractor_answers_are_wrong_answers():
    for task in HOTPOT + STRATEGY:
        assert task["distractor_answers"]
        assert not any(exact_match(a, task["answer"]) for a in task["distractor_answers"])


def test_strategy_tasks_carry_an_aligned_gold_decomposition():
    for task in STRATEGY:
        assert task["type"] == "strategy" and task["answer"] in ("Yes", "No")
        decomposition, evidence, facts = task["decomposition"], task["evidence"], task["facts"]
        assert len(decomposition) == len(evidence) >= 3
        assert evidence[-1] == "operation"
        sentences = dict(task["context"])
        grounded = [e for e in evidence if e != "operation"]
        assert [sentences[t][i] for t, i in grounded] == facts
        assert {tuple(e) for e in grounded} == {tuple(f) for f in task["supporting_facts"]}


def test_director_university_answer_is_computed_from_the_facts():
    config = WorldConfig(templates=("director_university_after",))
    for i in range(30):
        task = generate_strategyqa_task(config, 1, i)
        threshold = int(re.search(r"after (\d+)", task["question"]).group(1))
        founded = int(re.search(r"founded in (\d+)", task["facts"][-1]).group(1))
        assert task["answer"] == ("Yes" if founded > threshold else "No")


def test_num_distractors_and_corpus_paragraphs():
    config = WorldConfig(num_distractors=0)
    task = generate_hotpotqa_task(config, 0, 0)
    assert len(task["context"]) == len({t for t, _ in task["supporting_facts"]})
    paragraphs = corpus_paragraphs(HOTPOT[:3])
    assert len(paragraphs) == sum(len(t["context"]) for t in HOTPOT[:3])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_distractors": -1}, "num_distractors"),
        ({"num_distractors": 2.5}, "num_distractors"),
        ({"comparison_fraction": 1.5}, "comparison_fraction"),
        ({"yes_probability": -0.1}, "yes_probability"),
        ({"max_filler_sentences": 11}, "max_filler_sentences"),
        ({"templates": ("no_such_template",)}, "unknown templates"),
        ({"templates": "born_first"}, "tuple of template names"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig(**kwargs)


def test_template_sets_must_match_the_generator():
    with pytest.raises(ValueError, match="no StrategyQA template"):
        generate_strategyqa_task(WorldConfig(templates=HOTPOTQA_BRIDGE_TEMPLATES), 0, 0)
    with pytest.raises(ValueError, match="no HotpotQA template"):
        generate_hotpotqa_task(WorldConfig(templates=STRATEGYQA_TEMPLATES), 0, 0)
    assert generate_hotpotqa_task(WorldConfig(templates=HOTPOTQA_COMPARISON_TEMPLATES), 0, 0)["type"] == "comparison"


def test_seed_and_index_must_be_non_negative():
    with pytest.raises(ValueError, match="non-negative"):
        generate_hotpotqa_task(CONFIG, -1, 0)
