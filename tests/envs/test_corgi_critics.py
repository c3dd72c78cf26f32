"""CORGI's tool and model critics (mulligan.envs.verifiers.critics) and their tasks in Constraints-v0.

Tool critics get known answers (right and wrong programs, groupings). Model critics run on tiny
models built from a config and saved to a temporary folder, with their heads set so that the
verdict is known; nothing is downloaded.
"""

import json

import gymnasium
import pytest

import mulligan  # noqa: F401  (registers the ids)
from mulligan.envs.constraints import ConstraintsEnv
from mulligan.envs.verifiers.constraints import check_constraint, combine_critiques
from mulligan.envs.verifiers.critics import (
    CRITIC_IDS,
    MODEL_CRITIC_IDS,
    ClusteringCritic,
    CommonGenCritic,
    MbppCritic,
    ParaphraseCritic,
    ProgramCritic,
    RationaleGenerationCritic,
    SentimentCritic,
    StoryGenerationCritic,
    StyleTransferCritic,
    corenlp_parse,
    program_expected_value,
    read_common_sense_verdict,
    repeated_tokens,
    same_structure,
    score_common_gen,
    trim_parse,
)

ENV_ID = "Mulligan/Constraints-v0"
CLUSTERING = {"students": ["Mary", "Priscilla", "Agnes", "Felix"], "constraints": ["Felix_Mary_True"]}
MBPP = {"tests": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("aXbXcX","X") == "abXc"']}
PROGRAM = {"input_list": ["5", "4", "10"], "output_list": ["2", "1", "7"]}


# --------------------------------------------------------------------------------------------------
# clustering
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "score", "critique"),
    [
        (" Group 1: Mary, Felix.\nGroup 2: Priscilla, Agnes.", 1.0, ""),
        # Only the leading "Group" lines count; Felix's wish is unmet: 1 wrong of 4 placements.
        (
            " Group 1: Mary, Agnes.\nGroup 2: Priscilla, Felix.\nI hope this helps.",
            0.75,
            "Felix wasn't grouped with Mary despite Felix's request.",
        ),
        # A lone student, a stranger and a student left out: 3 wrong of 5; the mistakes joined by spaces.
        (
            " Group 1: Mary.\nGroup 2: Priscilla, Agnes, Bob.",
            0.4,
            "Group 1 has only one student, but each group should consist of at least two students. "
            "Bob in group 2 is not part of the students list. Felix was not grouped.",
        ),
        (
            " Group 1: Mary, Felix, Agnes.\nGroup 2: Priscilla, Agnes.",
            0.8,
            "Agnes was grouped multiple times.",
        ),
        (
            " I cannot group them.",
            0.0,
            "The output format is incorrect. Mary was not grouped. Priscilla was not grouped. Agnes was not "
            "grouped. Felix was not grouped.",
        ),
    ],
)
def test_clustering_critic_scores_and_words_as_the_official(answer, score, critique):
    result = ClusteringCritic().critique(CLUSTERING, answer, primed=True)
    assert result.score == pytest.approx(score) and result.holds == (score == 1.0)
    assert combine_critiques([result]) == critique


def test_clustering_accepts_the_worked_example_of_corgis_prompt():
    task = {
        "students": ["Sandy", "Lukas", "Katy", "Miley", "Pedro", "Dekel", "Alon", "Lori", "Lexie"],
        "constraints": ["Alon_Dekel_True", "Sandy_Lukas_True", "Miley_Lukas_False", "Pedro_Miley_True"],
    }
    answer = "- Output: Group 1: Alon, Dekel, Lori.\nGroup 2: Sandy, Lukas, Katy, Lexie.\nGroup 3: Pedro, Miley."
    assert ClusteringCritic().critique(task, answer).holds
    swapped = answer.replace("Katy, Lexie.\nGroup 3: Pedro, Miley.", "Miley, Lexie.\nGroup 3: Pedro, Katy.")
    result = ClusteringCritic().critique(task, swapped)
    # Miley now sits with Lukas against her wish, and Pedro without Miley against his: 2 of 9 wrong.
    assert result.score == pytest.approx(1 - 2 / 9)
    assert result.messages == (
        "Miley was grouped with Lukas despite Miley's request. "
        "Pedro wasn't grouped with Miley despite Pedro's request.",
    )


def test_clustering_answers_of_a_megabyte_are_checked_in_linear_time_with_a_short_critique():
    import time

    answer = " Group 1: " + "Mary, " * 299_000 + "Agnes."
    start = time.perf_counter()
    result = ClusteringCritic().critique({**CLUSTERING, "constraints": ["Mary_Agnes_False"]}, answer, primed=True)
    assert time.perf_counter() - start < 10
    # 299,001 placements and 2 students left out; only Agnes is placed right.
    assert result.score == pytest.approx(1 / 299_003)
    (critique,) = result.messages
    assert critique.startswith("Mary was grouped with Agnes despite Mary's request. Mary was grouped multiple")
    assert critique.endswith(" ...") and len(critique) < 5_000


def test_clustering_rejects_malformed_wishes():
    with pytest.raises(ValueError, match="A_B_True"):
        ClusteringCritic().critique({"students": ["A", "B"], "constraints": ["A wants B"]}, "x")


# --------------------------------------------------------------------------------------------------
# mbpp and program: run in a sandboxed subprocess
# --------------------------------------------------------------------------------------------------


def test_mbpp_a_correct_function_passes_every_test():
    answer = (
        " ```def remove_Occ(s,ch):\n    s = s.replace(ch, '', 1)\n    i = s.rfind(ch)\n"
        "    return s if i < 0 else s[:i] + s[i + 1:]```\n\nThis removes both."
    )
    result = MbppCritic().critique(MBPP, answer, primed=True)
    assert result.holds and result.score == 1.0 and result.messages == ()


def test_mbpp_a_wrong_function_is_told_the_first_failing_test():
    answer = " def remove_Occ(s,ch):\n    return s.replace(ch, '')"  # removes every occurrence
    result = MbppCritic().critique(MBPP, answer, primed=True)
    # The first test passes by luck ("hello" has two l's), the second fails: 0.5 + 0.5 * 1/2.
    assert result.score == 0.75 and not result.holds
    assert result.messages == (f"Your function fails on the following unit test:\n\n{MBPP['tests'][1]}",)


def test_mbpp_syntax_errors_loops_and_the_official_namespace():
    critic = MbppCritic(timeout_s=1.0)
    broken = critic.critique(MBPP, " def remove_Occ(s, ch) return s", primed=True)
    assert broken.score == 0.0 and broken.messages == ("Your function has a syntax error.",)
    loop = critic.critique(MBPP, " def remove_Occ(s, ch):\n    while True:\n        pass", primed=True)
    assert loop.score == 0.5 and loop.messages == ("Your function gets into an infinite loop.",)
    # The official exec runs inside a function: a recursive answer cannot see itself there ...
    recursive = " def remove_Occ(s, ch):\n    return s if ch not in s else remove_Occ(s.replace(ch, '', 1), ch)"
    tests = {"tests": ['assert remove_Occ("aXbX", "X") == "ab"']}
    assert critic.critique(tests, recursive, primed=True).score == 0.5
    assert MbppCritic(official_namespace=False).critique(tests, recursive, primed=True).score == 1.0
    # ... and `re` is in scope, as critiques.py imports it.
    regex = ' def remove_Occ(s, ch):\n    return re.sub("X", "", s)'
    assert critic.critique(tests, regex, primed=True).score == 1.0


@pytest.mark.parametrize(
    ("answer", "score", "messages"),
    [
        (" def f(x): return x - 3", 1.0, ()),
        (
            " def f(x): return x - 2",
            20 / 105,  # compiles (20), no output right, length part unused
            (
                "The output of 5 is 3.0, but it should be 2.0.",
                "The output of 4 is 2.0, but it should be 1.0.",
                "The output of 10 is 8.0, but it should be 7.0.",
            ),
        ),
        (" def f(x) return x", 0.0, ("Your function has a syntax error.",)),
        (" def g(x): return x - 3", 0.0, ("Your function has a syntax error.",)),
        (" def f(x): return x / 0", 0.0, ("Your function has a syntax error.",) * 3),
        # Right, but 100 characters or more: no length part, "too long".
        (" def f(x): return x - 3" + " + 0" * 20, 80 / 105, ("Your function is too long.",)),
        # A line break after the colon is joined; only the first line counts.
        (" def f(x):\n    return x - 3\nprint('done')", 1.0, ()),
    ],
)
def test_program_critic_known_answers(answer, score, messages):
    result = ProgramCritic().critique(PROGRAM, answer, primed=True)
    assert result.score == pytest.approx(score) and result.messages == messages


def test_program_reads_listed_outputs_as_the_official_unless_asked():
    # Officially "False" becomes bool("False"), which is True; literal_outputs reads it as False.
    assert program_expected_value("False") is True and program_expected_value("[0, 1]") == list("[0, 1]")
    assert program_expected_value("False", literal=True) is False
    assert program_expected_value("[0, 1]", literal=True) == [0, 1] and program_expected_value("7") == 7.0
    task = {"input_list": ["10", "8"], "output_list": ["True", "False"]}
    official = ProgramCritic().critique(task, " def f(x): return x > 9", primed=True)
    assert official.messages == ("The output of 8 is False, but it should be True.",)
    length = 25 - len("def f(x): return x > 9") / 4
    assert official.score == pytest.approx((20 + 0.5 * (60 + length)) / 105)
    assert ProgramCritic(literal_outputs=True).critique(task, " def f(x): return x > 9", primed=True).holds


def test_program_past_its_deadline_scores_zero():
    result = ProgramCritic(timeout_s=1.0).critique(PROGRAM, " def f(x): return [0 for _ in iter(int, 1)]", primed=True)
    assert result.score == 0.0 and result.messages == ("Your function gets into an infinite loop.",)


def test_code_cannot_write_over_the_callers_output():
    # The program's prints go nowhere; the verdict still comes back.
    answer = " def f(x): return print('{\"defined\": false}') or x - 3"
    assert ProgramCritic().critique(PROGRAM, answer, primed=True).holds


# --------------------------------------------------------------------------------------------------
# Tiny models for the model critics
# --------------------------------------------------------------------------------------------------

WORDS = ["the", "cat", "sat", "on", "mat", "great", "bad", "product", "why", "do", "people", "like", "dogs", "?", "."]


def _bert_tokenizer(folder):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    return tokenizer


def _tiny_bert_config(**extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        max_position_embeddings=64,
        **extra,
    )


def _classifier(tmp_path_factory, labels, always):
    """A tiny BERT classifier that always predicts ``labels[always]`` (its head is a fixed bias)."""
    import torch
    from transformers import BertForSequenceClassification

    folder = tmp_path_factory.mktemp("classifier")
    _bert_tokenizer(folder)
    config = _tiny_bert_config(id2label=dict(enumerate(labels)), label2id={v: k for k, v in enumerate(labels)})
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[always] = 5.0
    model.save_pretrained(folder)
    return str(folder)


STARS = ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]


def test_sentiment_critic_compares_the_classifiers_label_with_the_wanted_one(tmp_path_factory):
    critic = SentimentCritic(model=_classifier(tmp_path_factory, STARS, always=2), device="cpu")
    assert critic.critique({"label": "3 stars"}, " Great product. I like the mat", primed=True).holds
    wrong = critic.critique({"label": "5 stars"}, "- Output: Great product.", primed=False)
    assert wrong.score == 0.0
    assert wrong.messages == (
        "Your review classified as 3 stars review. Please write a new short 5 stars review. "
        "Do not mention the number of stars.",
    )
    # Only the text up to the last "." is classified.
    assert critic.extract("Great. Bad product. and then", {}) == "Great. Bad product."


def test_style_transfer_critic_wants_neutral(tmp_path_factory):
    neutral = StyleTransferCritic(model=_classifier(tmp_path_factory, ["NEUTRAL", "SUBJECTIVE"], 0), device="cpu")
    subjective = StyleTransferCritic(model=_classifier(tmp_path_factory, ["NEUTRAL", "SUBJECTIVE"], 1), device="cpu")
    task = {"sentence": "the great cat sat on the mat."}
    assert neutral.critique(task, " the cat sat on the mat.", primed=True).holds
    result = subjective.critique(task, " the cat sat on the mat.", primed=True)
    assert result.score == 0.0
    assert result.messages == ("Your rephrased sentence is subjective. Sentence: the great cat sat on the mat.",)
    with pytest.raises(ValueError, match="NEUTRAL"):
        StyleTransferCritic(model=_classifier(tmp_path_factory, ["A", "B"], 0), device="cpu")


def _sentencepiece_style_tokenizer(folder):
    """A word-level tokenizer whose words start with "▁", as Llama-2's SentencePiece pieces do."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, ".": 2, **{f"▁{w}": i + 3 for i, w in enumerate(WORDS[:13])}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"), pre_tokenizers.Punctuation()]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>")
    tokenizer.save_pretrained(folder)
    return tokenizer


def test_repetitions_count_word_pieces_seen_among_the_four_before(tmp_path):
    tokenizer = _sentencepiece_style_tokenizer(tmp_path / "gen")
    ids = tokenizer("the cat sat on the mat cat people cat")["input_ids"]
    rate, repeated = repeated_tokens(ids, tokenizer)
    # From the 5th token on: "the" is a stopword; mat, cat (not within the 4 before), people and
    # cat (within them) count: 1 repetition in 4.
    assert [tokenizer.convert_ids_to_tokens(t) for t in repeated] == ["▁cat"]
    assert rate == pytest.approx(1 / 4, abs=1e-6)


def _story_critic(tmp_path, generator_tokenizer):
    import torch
    from transformers import BertModel

    folder = tmp_path / "simcse"
    _bert_tokenizer(folder)
    encoder = BertModel(_tiny_bert_config())
    with torch.no_grad():  # every text gets the same pooled embedding: always coherent
        encoder.pooler.dense.weight.zero_()
        encoder.pooler.dense.bias.fill_(0.5)
    encoder.save_pretrained(folder)
    return StoryGenerationCritic(similarity_model=str(folder), generator_tokenizer=generator_tokenizer, device="cpu")


def test_story_critic_names_repeated_words_and_scores_half_each(tmp_path):
    generator = _sentencepiece_style_tokenizer(tmp_path / "gen")
    critic = _story_critic(tmp_path, str(tmp_path / "gen"))
    task = {"prefix": "The cat sat on the mat."}
    assert critic.coherence("the cat", "the cat") == pytest.approx(1.0)
    clean = critic.critique(task, " People like dogs.", primed=True)
    assert clean.holds and clean.score == 1.0
    # The unprimed answer repeats the story's opening; it is dropped before checking.
    repeated = critic.critique(
        task, "- Output: The cat sat on the mat. The cat sat on people cat mat cat", primed=False
    )
    assert repeated.score == 0.5
    assert repeated.messages == ("You repeated the words: cat. Try to make less repeatitions.",)
    assert generator.convert_ids_to_tokens(generator("cat")["input_ids"]) == ["▁cat"]


def _forced_seq2seq(folder, tokenizer_words, always):
    """A tiny BART whose output logits are a fixed bias: it always writes ``always`` (or stops at once)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(tokenizer_words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(folder)
    config = BartConfig(
        vocab_size=len(vocab),
        d_model=8,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=1,
        decoder_attention_heads=1,
        encoder_ffn_dim=8,
        decoder_ffn_dim=8,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        tie_word_embeddings=False,
    )
    model = BartForConditionalGeneration(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.final_logits_bias.zero_()
        model.final_logits_bias[0, vocab[always]] = 10.0
    model.save_pretrained(folder)
    return str(folder)


def test_rationale_critic_asks_the_student(tmp_path):
    words = ["9", "2.", "anxiety"]
    task = {
        "student_model_query": "Question: ? Options: 1. horror 2. anxiety Background: ADDED_EXP Answer:",
        "correct_answer": "2. anxiety and fear",
    }
    wrong = RationaleGenerationCritic(student_model=_forced_seq2seq(tmp_path / "a", words, "9"), max_new_tokens=3)
    assert wrong.student_answer("anything") == "9 9 9"
    result = wrong.critique(task, "- Output: Background: People fear jobs. They worry. A third.", primed=False)
    assert result.score == 0.0 and result.messages == (RationaleGenerationCritic.MESSAGE,)
    assert wrong.extract(" People fear jobs. They worry. A third.", task) == "People fear jobs. They worry."
    # An answer that is part of the gold answer counts, an empty one included (the official check).
    right = RationaleGenerationCritic(student_model=_forced_seq2seq(tmp_path / "b", words, "2."), max_new_tokens=1)
    assert right.critique(task, " Jobs are scary.", primed=True).holds
    silent = RationaleGenerationCritic(student_model=_forced_seq2seq(tmp_path / "c", words, "</s>"))
    assert silent.student_answer("anything") == "" and silent.critique(task, " x.", primed=True).holds


# CoreNLP parses (the server's bracketed output) and CORGI's exemplars.
WHY_PARSE = (
    "(ROOT\n  (SBARQ\n    (WHADVP (WRB why))\n    (SQ (VBP do)\n      (NP (DT some) (NNS people))\n"
    "      (VP (VB like) (NP (NNS cats))))\n    (. ?)))"
)
DO_PARSE = "(ROOT (SQ (VBP do) (NP (NNS cats)) (VP (VB love) (NP (PRP$ their) (NNS owners))) (. ?)))"


def test_parses_are_trimmed_to_three_levels_in_corgis_format():
    assert trim_parse(WHY_PARSE) == "(ROOT (SBARQ (WHADVP ) (SQ ) (. )))"
    assert trim_parse(DO_PARSE) == "(ROOT (SQ (VBP ) (NP ) (VP ) (. )))"
    assert same_structure(trim_parse(WHY_PARSE), "(ROOT (SBARQ (WHADVP ) (SQ ) (. )))")
    assert not same_structure(trim_parse(WHY_PARSE), "(ROOT (SBARQ (WHNP ) (SQ ) (. )))")
    # S nodes do not count in CORGI's tree edit distance.
    assert same_structure("(ROOT (S (NP ) (VP ) (. )))", "(ROOT (NP ) (VP ) (. ))")
    with pytest.raises(ValueError, match="unbalanced"):
        trim_parse("(ROOT (S ")


def test_paraphrase_critic_checks_the_pair_and_the_structure(tmp_path_factory):
    exemplar = "(ROOT (SBARQ (WHADVP ) (SQ ) (. )))"
    task = {"source": "why do some people like cats more than dogs ?", "exemplar": exemplar}
    parses = {"why do people like cats ?": WHY_PARSE, "do cats love their owners ?": DO_PARSE}
    paraphrase = _classifier(tmp_path_factory, ["LABEL_0", "LABEL_1"], 1)
    critic = ParaphraseCritic(classifier=paraphrase, parser=parses.__getitem__, device="cpu")
    assert critic.critique(task, " why do people like cats ? Because.", primed=True).holds
    result = critic.critique(task, " do cats love their owners ?", primed=True)
    assert result.score == 0.5
    assert result.messages == (
        "The syntactic structure of your question is (ROOT (SQ (VBP ) (NP ) (VP ) (. ))). Your question should "
        f"have the following syntactic structure: {exemplar}.",
    )
    not_paraphrase = _classifier(tmp_path_factory, ["LABEL_0", "LABEL_1"], 0)
    both = ParaphraseCritic(classifier=not_paraphrase, parser=parses.__getitem__, device="cpu")
    assert combine_critiques([both.critique(task, " do cats love their owners ?", primed=True)]).startswith(
        "Your question is not a paraphrase of the given question. In addition, the syntactic structure"
    )


def test_paraphrase_without_a_corenlp_server_says_how_to_start_one():
    with pytest.raises(ConnectionError, match=r"StanfordCoreNLPServer.*corenlp_url"):
        corenlp_parse("why ?", "http://127.0.0.1:9", timeout_s=2)


def test_common_gen_scores_cover_part_of_speech_and_common_sense():
    words, pos = ["dog", "catch", "frisbee"], ["noun", "verb", "noun"]
    # spaCy's tags of "The dog catches the frisbee." and of "The catch of the dog."
    right = [("the", "DET"), ("dog", "NOUN"), ("catch", "VERB"), ("the", "DET"), ("frisbee", "NOUN"), (".", "PUNCT")]
    assert score_common_gen(words, pos, right, True, "") == (1.0, [])
    wrong = [("the", "DET"), ("catch", "NOUN"), ("of", "ADP"), ("the", "DET"), ("dog", "NOUN"), (".", "PUNCT")]
    verdict = "Your sentence doesn't describe a common sense scenario: a catch is not a dog's."
    score, messages = score_common_gen(words, pos, wrong, False, verdict)
    assert score == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert messages == [
        "You didn't use the following concepts: frisbee.",
        "You should correct the part of speech: catch as a verb, frisbee as a noun.",
        verdict,
    ]


def test_common_gen_judge_verdicts_and_its_missing_dependencies():
    prompt = "user\nDoes ...\nmodel\nAnswer:"
    assert read_common_sense_verdict(prompt + " Yes. Explanation: dogs catch frisbees.") == (True, "")
    assert read_common_sense_verdict(prompt + " No. Explanation: Dogs do not drive.") == (
        False,
        "Your sentence doesn't describe a common sense scenario: Dogs do not drive.",
    )
    assert read_common_sense_verdict(prompt + " No. Cats cannot fly.") == (
        False,
        "Your sentence doesn't describe a common sense scenario: Cats cannot fly.",
    )
    assert read_common_sense_verdict(prompt + " Maybe") == (False, "")
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="spacy download en_core_web_lg"):
            CommonGenCritic(judge_model="unused")


# --------------------------------------------------------------------------------------------------
# CORGI's released records of these tasks in Constraints-v0
# --------------------------------------------------------------------------------------------------

_USER = "<|start_header_id|>user<|end_header_id|>\n\n"
_ASSISTANT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n\n"


def _record(task, primer="- Output:", **fields):
    record = {"query": f'{_USER}# Instruction\n\n...\n- Input: "..."{_ASSISTANT}{primer}', **fields}
    if task is not None:
        record.update(id=f"{task}_test_0", task=task)
    return record


CRITIC_RECORDS = {
    "corgi:clustering": _record("clustering", **CLUSTERING),
    "corgi:mbpp": _record("mbpp", function_name="remove_Occ", ref="...", **MBPP),
    "corgi:program": _record("program", category="numeric", **PROGRAM),
    "corgi:sentiment": _record("sentiment", label="5 stars"),
    "corgi:style_transfer": _record("style_transfer", sentence="a great cat.", ref="a cat."),
    "corgi:story_generation": _record("story_generation", "- Output: The cat sat.", prefix="The cat sat."),
    "corgi:rationale_generation": _record(
        "rationale_generation",
        "- Output: Background:",
        student_model_query="Q ADDED_EXP Answer:",
        correct_answer="2. anxiety",
    ),
    "corgi:paraphrase": _record("paraphrase", source="why ?", exemplar="(ROOT (SBARQ ))", ref="why ?"),
    # CORGI's common_gen test file has neither "task" nor "id": its fields name it.
    "corgi:common_gen": _record(None, words=["dog", "catch"], pos=["noun", "verb"]),
}


def test_every_corgi_task_loads_and_model_tasks_need_the_critics_option(tmp_path):
    assert set(CRITIC_RECORDS) == set(CRITIC_IDS)
    for cid, record in CRITIC_RECORDS.items():
        path = tmp_path / f"{cid.split(':')[1]}.json"
        path.write_text(json.dumps([record]))
        if cid in MODEL_CRITIC_IDS:
            with pytest.raises(ValueError, match=r"critics='paper'"):
                ConstraintsEnv(dataset=str(path))
            continue
        env = ConstraintsEnv(dataset=str(path))
        _, info = env.reset(options={"task_index": 0})
        assert env.task["instruction_id_list"] == [cid] and info["response_prefix"] == "- Output:"
    # critics="paper" gives the tool tasks the paper's (offline) critics.
    clustering = ConstraintsEnv(dataset=str(tmp_path / "clustering.json"), critics="paper", primed=True)
    assert isinstance(clustering.critics["corgi:clustering"], ClusteringCritic)
    clustering.reset(options={"task_index": 0})
    assert clustering.step(" Group 1: Mary, Felix.\nGroup 2: Priscilla, Agnes.")[1] == 1.0
    with pytest.raises(ValueError, match="critics must be None, 'paper' or a dict"):
        ConstraintsEnv(dataset=str(tmp_path / "clustering.json"), critics="all")
    with pytest.raises(ValueError, match="unknown CORGI task 'poetry'"):
        ConstraintsEnv(dataset=str(_write(tmp_path / "p.json", [_record("poetry")])))
    with pytest.raises(ValueError, match=r"needs the field\(s\) \['label'\]"):
        ConstraintsEnv(dataset=str(_write(tmp_path / "s.json", [_record("sentiment")])))


def _write(path, records):
    path.write_text(json.dumps(records))
    return path


def test_a_program_session_retries_with_the_critics_feedback(tmp_path):
    path = _write(tmp_path / "program.json", [CRITIC_RECORDS["corgi:program"]])
    env = gymnasium.make(ENV_ID, dataset=str(path), primed=True, max_attempts=3)
    _, info = env.reset(options={"task_index": 0})
    assert info["response_prefix"] == "- Output:"
    observation, reward, terminated, _, info = env.step(" def f(x): return x")
    assert not terminated and info["response_prefix"] == "- Output:"
    assert observation == (
        "- Feedback: The output of 5 is 5.0, but it should be 2.0. In addition, the output of 4 is 4.0, but it "
        "should be 1.0. Moreover, the output of 10 is 10.0, but it should be 7.0. Please Try again."
    )
    _, reward, terminated, _, info = env.step(" def f(x): return x - 3")
    assert terminated and info["success"] and reward == pytest.approx(1.0 - 20 / 105)


def test_several_files_mix_corgis_tasks_with_per_file_task_ids(tmp_path):
    files = [
        _write(tmp_path / "program.json", [CRITIC_RECORDS["corgi:program"]] * 2),
        _write(tmp_path / "clustering.json", [CRITIC_RECORDS["corgi:clustering"]]),
    ]
    env = ConstraintsEnv(dataset=[str(f) for f in files], primed=True)
    assert env.num_tasks == 3
    ids = []
    for index in range(3):
        _, info = env.reset(options={"task_index": index})
        ids.append((info["task_id"], env.task["instruction_id_list"][0]))
    assert ids == [
        ("program-0", "corgi:program"),
        ("program-1", "corgi:program"),
        ("clustering-0", "corgi:clustering"),
    ]
    with pytest.raises(ValueError, match="a list of them"):
        ConstraintsEnv(dataset=[])


def test_model_critics_plug_into_the_env_by_task_name(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    path = _write(folder / "sentiment.json", [CRITIC_RECORDS["corgi:sentiment"]])
    critic = SentimentCritic(model=_classifier(tmp_path_factory, STARS, always=4), device="cpu")
    env = gymnasium.make(ENV_ID, dataset=str(path), critics={"sentiment": critic})
    env.reset(options={"task_index": 0})
    _, reward, _, _, info = env.step("- Output: Great product.")
    assert reward == 1.0 and info["success"]
    with pytest.raises(ValueError, match="must be a Critic for corgi:style_transfer"):
        ConstraintsEnv(dataset=str(path), critics={"style_transfer": critic})
    # An explicit record of a model task without its critic is refused on reset, naming the option.
    with pytest.raises(ValueError, match=r"critics='paper'"):
        gymnasium.make(ENV_ID).reset(options={"task": CRITIC_RECORDS["corgi:style_transfer"]})
    # check_constraint takes the critics too.
    result = check_constraint("corgi:sentiment", "Bad.", {"label": "2 stars"}, critics={"corgi:sentiment": critic})
    assert result.messages[0].startswith("Your review classified as 5 stars review.")
