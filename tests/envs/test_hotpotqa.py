import json
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mulligan  # noqa: F401  (registers the ids)
from mulligan.envs.data import parse_hf_spec
from mulligan.envs.hotpotqa import (
    ACTION_GRAMMAR,
    ACTION_VERBS,
    DEFAULT_HUB_SPLIT,
    PROCEDURAL_TEST_SIZE,
    HotpotQAEnv,
    load_paragraphs,
    qa_task_signature,
    record_from_hf,
)
from mulligan.envs.react import parse_react_action
from mulligan.envs.retrieval import Document, DocumentStore, LookupState, linear_scan_rank

ENV_ID = "Mulligan/HotpotQA-v0"
FIXTURES = Path(__file__).parents[1] / "fixtures"
DISTRACTOR = FIXTURES / "hotpotqa_mini.jsonl"
FULLWIKI = FIXTURES / "hotpotqa_mini_fullwiki.jsonl"
CORPUS = FIXTURES / "hotpotqa_mini_corpus.jsonl"
INFO_KEYS = {"task_id", "success", "score", "feedback", "em", "f1", "fine_grained_label", "action_type"}


def test_check_env_through_the_registry():
    check_env(gymnasium.make(ENV_ID).unwrapped)
    check_env(gymnasium.make(ENV_ID, dataset=str(DISTRACTOR)).unwrapped)


def test_registered_step_budget_truncates_after_ten_steps():
    env = gymnasium.make(ENV_ID)
    assert env.spec.max_episode_steps == 10
    env.reset(seed=0)
    for step in range(10):
        _, reward, terminated, truncated, _info = env.step("Action: lookup[anything]")
        assert reward == 0.0 and not terminated
        assert truncated == (step == 9)


def _first_gold(env):
    task = env.unwrapped.task
    title, _index = task["supporting_facts"][0]
    return task, title, dict(task["context"])[title]


def test_exact_search_shows_the_opening_sentences_and_lookup_walks_matches():
    env = gymnasium.make(ENV_ID, search_sentences=2)
    env.reset(options={"task_index": 4})
    _task, title, sentences = _first_gold(env)
    obs, reward, terminated, _, info = env.step(f"Thought: start with the entity.\nAction: search[{title.upper()}]")
    assert obs == f'Page "{title}": ' + " ".join(sentences[:2])
    assert (reward, terminated, info["action_type"], info["feedback"]) == (0.0, False, "search", "")
    word = sentences[-1].split()[-1].strip(".")
    matches = [s for s in sentences if word.lower() in s.lower()]
    for rank, sentence in enumerate(matches, 1):
        obs, *_ = env.step(f"Action: lookup[{word}]")
        assert obs == f"({rank} / {len(matches)}) {sentence}".replace("(", "(Result ", 1)
    obs, *_ = env.step(f"Action: lookup[{word}]")
    assert obs.startswith("No more results")


def test_non_exact_search_ranks_by_bm25_and_a_miss_lists_similar_titles():
    env = gymnasium.make(ENV_ID, dataset=str(DISTRACTOR))
    env.reset(options={"task_index": 0})
    obs, *_ = env.step("search[painter born in Marrowby]")
    assert obs.startswith('No page titled "painter born in Marrowby"; best match. Page "Oswin Pell":')
    obs, *_ = env.step("search[Oswinn Pel]")
    assert obs.startswith('Could not find "Oswinn Pel". Similar titles: "Oswin Pell"')
    obs, *_ = env.step("lookup[born]")
    assert obs == "There is no document to look in: search[entity] first."
    obs, *_ = env.step("search[qqqq zzzz]")
    assert obs == 'Could not find "qqqq zzzz" and no title is similar.'


def test_malformed_actions_name_the_three_actions_and_count_as_steps():
    env = gymnasium.make(ENV_ID)
    env.reset(seed=1)
    for action in ["", "I think the answer is Paris", "Action: jump[x]", "search[]", "finish[Paris", "search[a[b]"]:
        obs, reward, terminated, _truncated, info = env.step(action)
        assert obs == ACTION_GRAMMAR == info["feedback"]
        assert "search[entity]" in obs and "lookup[keyword]" in obs and "finish[answer]" in obs
        assert (reward, terminated, info["action_type"]) == (0.0, False, "invalid")
    assert env._elapsed_steps == 6


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("search[Ed Wood]", ("search", "Ed Wood")),
        ("Thought: who?\nAction: Search[ Ed Wood ]", ("search", "Ed Wood")),
        ("Thought 2: hmm\nAction 2: lookup[born]\nObservation 2: made up", ("lookup", "born")),
        ("Action: finish[The [bracketed] band] trailing", ("finish", "The [bracketed] band")),
        ("action:finish[yes]", ("finish", "yes")),
        ("Thought: I should search[X]", None),
        ("finish[]", None),
        ("finish[  ]", None),
        ("lookup[unclosed", None),
        ("Action: calculate[1+1]", None),
        ("", None),
        # Multi-line arguments parse as in MathReAct (before: refused here, accepted there).
        ("Action: finish[Ada\nLovelace]", ("finish", "Ada\nLovelace")),
        ("my next action: think\nAction: search[X]", ("search", "X")),
    ],
)
def test_action_grammar(text, parsed):
    assert parse_react_action(text, ACTION_VERBS) == parsed


def test_reward_em_by_default_and_f1_by_option():
    for mode in ("em", "f1"):
        env = gymnasium.make(ENV_ID, dataset=str(DISTRACTOR), reward=mode)
        env.reset(options={"task_index": 0})  # gold: "River Tallow"
        _, reward, terminated, _, info = env.step("Thought: done.\nAction: finish[the Tallow]")
        assert terminated and info["em"] == 0.0 and info["f1"] == pytest.approx(2 / 3)
        assert info["score"] == pytest.approx(2 / 3) and not info["success"]
        assert info["fine_grained_label"] == "[Mostly Correct]"
        assert reward == (0.0 if mode == "em" else pytest.approx(2 / 3))
        assert "incorrect" in info["feedback"]
    env.reset(options={"task_index": 0})
    _, reward, _, _, info = env.step("finish[river tallow.]")
    assert (reward, info["success"], info["score"], info["fine_grained_label"]) == (1.0, True, 1.0, "[Correct]")


def test_yes_no_gold_answers_use_the_official_special_case():
    env = gymnasium.make(ENV_ID, dataset=str(DISTRACTOR), reward="f1")
    env.reset(options={"task_index": 1})  # gold: "no"
    _, reward, _, _, info = env.step("finish[no they are not]")
    assert reward == 0.0 and info["fine_grained_label"] == "[Totally Incorrect]"


def test_info_has_the_same_keys_on_every_step():
    env = gymnasium.make(ENV_ID)
    _, info = env.reset(seed=3)
    assert set(info) == INFO_KEYS
    for action in ["search[x]", "lookup[y]", "nonsense", "finish[z]"]:
        *_, info = env.step(action)
        assert set(info) == INFO_KEYS


def test_task_round_trip_and_stable_ids():
    env = gymnasium.make(ENV_ID)
    obs, info = env.reset(options={"task_index": 12})
    task = env.unwrapped.task
    assert env.unwrapped.num_tasks is None
    obs2, info2 = env.reset(options={"task": json.loads(json.dumps(task))})
    assert (obs2, info2["task_id"]) == (obs, info["task_id"]) and info["task_id"] == "world-hotpotqa-0-12"
    assert obs.endswith(f"Question: {task['question']}")
    other = gymnasium.make(ENV_ID, data_seed=1)
    other.reset(options={"task_index": 12})
    assert other.unwrapped.task["question"] != task["question"]


def test_seeded_resets_are_reproducible():
    a, b = gymnasium.make(ENV_ID), gymnasium.make(ENV_ID)
    assert a.reset(seed=7)[0] == b.reset(seed=7)[0]


def test_distractor_setting_loads_jsonl_and_json_lists():
    for path in (DISTRACTOR, FIXTURES / "hotpotqa_mini.json"):
        env = gymnasium.make(ENV_ID, dataset=str(path))
        assert env.unwrapped.num_tasks == 3
        obs, info = env.reset(options={"task_index": 2})
        assert info["task_id"] == "fixture-bridge-3"
        assert obs.endswith("Question: What instrument did the founder of the Brindle Consort play?")
        obs, *_ = env.step("search[Hesper Vane]")
        assert "viola" not in obs  # beyond the opening sentences
        obs, *_ = env.step("lookup[plays]")
        assert obs == "(Result 1 / 1) Vane plays the viola da gamba."
        # The corpus is the record's own context: another record's paragraphs are not there.
        obs, *_ = env.step("search[Marrowby]")
        assert obs.startswith("Could not find")


def test_fullwiki_setting_searches_the_user_corpus():
    env = gymnasium.make(ENV_ID, dataset=str(FULLWIKI), corpus=str(CORPUS))
    obs, _info = env.reset(options={"task_index": 0})
    assert env.unwrapped.task["context"] == []  # fullwiki records need no context of their own
    obs, *_ = env.step("search[Marrowby]")
    assert obs.startswith('Page "Marrowby": Marrowby is a market town.')
    obs, *_ = env.step("search[Hesper Vane]")  # another question's paragraph, same corpus
    assert obs.startswith('Page "Hesper Vane"')
    obs, *_ = env.step("search[Corvel]")  # a paragraph given as "text": [sentences]
    assert obs == 'Page "Corvel": Corvel is a university city. It hosts a music academy.'
    _, reward, *_ = env.step("finish[River Tallow]")
    assert reward == 1.0


def test_loader_errors_are_explicit(tmp_path):
    # A record with a missing key fails when the env is built, naming the file and line (before:
    # it loaded, and failed only when that task was reset, with no file or index).
    bad = tmp_path / "bad.jsonl"
    good = {"question": "Q?", "answer": "A", "context": [["T", ["s"]]]}
    bad.write_text(json.dumps(good) + "\n\n" + '{"question": "Q?", "answer": "A"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: .*needs 'context'"):
        HotpotQAEnv(dataset=str(bad))
    as_list = tmp_path / "list.json"
    as_list.write_text("[\n" + json.dumps(good) + ",\n" + json.dumps({**good, "answer": 3}) + "\n]")
    with pytest.raises(ValueError, match=r"list\.json:3: .*'answer'"):
        HotpotQAEnv(dataset=str(as_list))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(good) + "\nnot json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2"):
        HotpotQAEnv(dataset=str(broken))
    with pytest.raises(ValueError, match="needs a non-empty string 'answer'"):
        gymnasium.make(ENV_ID).reset(options={"task": {"question": "Q?", "answer": "", "context": [["T", ["s"]]]}})
    with pytest.raises(ValueError, match="supporting_facts"):
        gymnasium.make(ENV_ID).reset(
            options={"task": {"question": "Q?", "answer": "a", "context": [["T", ["s"]]], "supporting_facts": "T"}}
        )
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"title": "A", "sentences": ["x"]}\n{"name": "B"}\n')
    with pytest.raises(ValueError, match=r"corpus\.jsonl:2: a paragraph needs"):
        load_paragraphs(corpus)
    with pytest.raises(ValueError, match=r"pass dataset= too"):
        HotpotQAEnv(corpus=str(CORPUS))
    with pytest.raises(ValueError, match="reward must be"):
        HotpotQAEnv(reward="bleu")


def test_hf_names_and_rows_are_parsed_without_downloading():
    def parse(spec):
        hub = parse_hf_spec(spec, default_split=DEFAULT_HUB_SPLIT)
        return hub.name, hub.config, hub.split

    assert parse("hf:hotpotqa/hotpot_qa:distractor:validation") == ("hotpotqa/hotpot_qa", "distractor", "validation")
    assert parse("hf:hotpot_qa:fullwiki") == ("hotpot_qa", "fullwiki", "validation")
    assert parse("hf:some/name") == ("some/name", None, "validation")
    for bad in ("hotpot_qa", "hf:", "hf:a:b:", "hf:a:b:c:d"):
        with pytest.raises(ValueError):
            parse(bad)
    row = {
        "id": "x1",
        "question": "Q?",
        "answer": "A",
        "type": "bridge",
        "level": "easy",
        "supporting_facts": {"title": ["T1", "T2"], "sent_id": [0, 1]},
        "context": {"title": ["T1", "T2"], "sentences": [["a."], ["b.", "c."]]},
    }
    record = record_from_hf(row)
    assert record["_id"] == "x1"
    assert record["supporting_facts"] == [["T1", 0], ["T2", 1]]
    assert record["context"] == [["T1", ["a."]], ["T2", ["b.", "c."]]]
    env = gymnasium.make(ENV_ID)
    env.reset(options={"task": record})
    assert env.step("search[T2]")[0] == 'Page "T2": b. c.'


FUZZ = [
    "",
    " ",
    "\x00\x01\x1b[31m\x7f",
    "search[\x00]",
    "finish[\u202e\u0000]",
    "😀" * 1000,
    "search[東京]",
    "lookup[" + "a" * 100_000 + "]",
    "x" * 1_000_000,
    "search[" + "word " * 200_000 + "]",
    "finish[" + "y" * 1_000_000 + "]",
    "Action: " + "[" * 100_000,
    "import os; os.system('rm -rf /')",
    "search[__import__('os').system('echo hi')]",
    "\\frac{\\frac{1}{2}}{3}" * 1000,
    "\ud800 lone surrogate",
]


@pytest.mark.parametrize("env_id", [ENV_ID, "Mulligan/StrategyQA-v0"])
def test_action_fuzz_never_raises(env_id):
    env = gymnasium.make(env_id)
    for action in FUZZ:
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(obs, str) and env.observation_space.contains(obs)
        assert 0.0 <= reward <= 1.0 and set(info) == INFO_KEYS and not truncated
    sample_env = gymnasium.make(env_id)
    sample_env.reset(seed=0)
    sample_env.action_space.seed(0)
    for _ in range(200):
        *_, terminated, truncated, _ = sample_env.step(sample_env.action_space.sample())
        if terminated or truncated:
            sample_env.reset()


def test_bm25_index_matches_a_linear_scan_and_prefers_titles():
    documents = [
        Document("Ed Wood", ("Ed Wood was a filmmaker.", "He directed films.")),
        Document("Ed Wood (film)", ("Ed Wood is a 1994 film about Ed Wood.",)),
        Document("Woodson, Arkansas", ("Woodson is a place named for Ed Wood Sr.",)),
        Document("Tim Burton", ("Tim Burton directed the film Ed Wood.",)),
        Document("Harbour", ("A harbour is a sheltered body of water.",)),
    ]
    store = DocumentStore(documents)
    for query in ["Ed Wood film", "directed", "water harbour", "Arkansas place", "nothing here"]:
        assert store.rank(query) == linear_scan_rank(documents, query)
    assert store.rank("Tim Burton")[0] == 3
    assert store.search("ed  WOOD").exact and store.search("ed wood").document.title == "Ed Wood"
    assert store.search("the filmmaker").document.title == "Ed Wood"
    miss = store.search("Harbr")
    assert miss.document is None and miss.similar[0] == "Harbour"


def test_lookup_state_restarts_on_a_new_keyword():
    state = LookupState()
    sentences = ["Alpha one.", "Beta two.", "alpha three."]
    assert state.next(sentences, "ALPHA") == ("Alpha one.", 1, 2)
    assert state.next(sentences, "alpha") == ("alpha three.", 2, 2)
    assert state.next(sentences, "alpha") == (None, 0, 2)
    assert state.next(sentences, "beta") == ("Beta two.", 1, 1)


@pytest.mark.parametrize("env_id", [ENV_ID, "Mulligan/StrategyQA-v0"])
def test_procedural_splits_are_disjoint_by_content(env_id):
    # Before, the procedural world had one stream: no held-out questions at all.
    test = gymnasium.make(env_id, split="test").unwrapped
    train = gymnasium.make(env_id).unwrapped
    assert test.num_tasks == PROCEDURAL_TEST_SIZE and train.num_tasks is None
    assert gymnasium.make(env_id, split="test", num_tasks=50).unwrapped.num_tasks == 50
    test_signatures = {qa_task_signature(test.get_task(i)) for i in range(300)}
    train_signatures = {qa_task_signature(train.get_task(i)) for i in range(1500)}
    assert len(test_signatures) > 250 and len(train_signatures) > 1200
    assert not test_signatures & train_signatures
    assert test.get_task(3)["_id"].endswith("-test-3") and train.get_task(3)["_id"].endswith("-0-3")
    assert test.get_task(3) == gymnasium.make(env_id, split="test").unwrapped.get_task(3)
    with pytest.raises(ValueError, match="splits"):
        gymnasium.make(env_id, split="validation")
    with pytest.raises(ValueError, match="only for the procedural world"):
        gymnasium.make(env_id, dataset=str(DISTRACTOR), split="test")
