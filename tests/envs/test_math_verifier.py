import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mulligan.envs.verifiers import math as mv
from mulligan.envs.verifiers.math import (
    MAX_ANSWER_CHARS,
    VerifierPool,
    extract_answer,
    get_verifier_pool,
    math_reward,
    normalize_answer,
    shutdown_verifier_pool,
    verify,
    verify_batch,
)

# (gold, answer): each pair must be judged equivalent.
EQUIVALENT = [
    ("72", "72"),  # identical
    ("72", "72.0"),  # a decimal point and zeros do not change a number
    ("1234", "1,234"),  # thousands separators
    ("1234567", "1,234,567"),  # several separator groups
    ("18", "$18"),  # currency sign
    ("18", "\\$18.00"),  # escaped LaTeX dollar and cents
    ("18", "18 dollars"),  # a unit word after the number
    ("5", "5 \\text{ cm}"),  # a LaTeX unit
    ("25", "25\\%"),  # percent sign on the answer (GSM8K percent questions)
    ("0.5", "\\frac{1}{2}"),  # decimal against a LaTeX fraction
    ("1/2", "0.5"),  # plain fraction against a decimal
    ("7/4", "1.75"),  # improper fraction against a decimal
    ("\\frac{1}{2}", "\\dfrac{1}{2}"),  # \dfrac is \frac
    ("\\frac{1}{2}", "\\frac{2}{4}"),  # unreduced fraction
    ("-3", "-3.0"),  # negative numbers
    ("3", "x = 3"),  # an assignment to the variable against the bare value
    ("3", "$x=3$"),  # the same inside math delimiters
    ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}"),  # symbolic equality after simplification
    ("2\\sqrt{3}", "\\sqrt{12}"),  # radicals simplify
    ("\\{1,2\\}", "\\{2,1\\}"),  # sets are unordered
    ("[1,2)", "[1, 2)"),  # intervals, spacing ignored
    ("(-2, 2)", "(-2,2)"),  # an open interval
    ("y=2x+1", "2x+1=y"),  # equations with sides swapped
    ("x^2+2x+1", "(x+1)^2"),  # polynomial identity
    ("\\pi", "3.14159265"),  # a constant against enough of its digits
    ("1/3", "0.333333"),  # rounding to six places is accepted (math-verify's rule)
    ("7/4", "1\\frac{3}{4}"),  # a mixed number
    ("72", "\\boxed{72}"),  # a box left inside the answer
    ("10", "10."),  # a sentence's final period
]

# (gold, answer): each pair must be judged different.
NOT_EQUIVALENT = [
    ("72", "73"),  # off by one
    ("72", "-72"),  # wrong sign
    ("1234", "1,235"),  # separators do not hide a wrong digit
    ("0.5", "5"),  # misplaced decimal point
    ("1/3", "0.33"),  # two decimals are not a third
    ("7/4", "4/7"),  # inverted fraction
    ("3", "x = 4"),  # wrong assigned value
    ("[1,2)", "(1,2)"),  # closed and open ends differ
    ("\\{1,2\\}", "\\{1,3\\}"),  # different sets
    ("y=2x+1", "y=2x-1"),  # different equations
    ("\\sqrt{2}", "2"),  # a root is not its radicand
    ("x^2", "2x"),  # different expressions
    ("5", "five apples and 6"),  # a different number in words
    ("10", ""),  # empty answer
    ("10", "   "),  # blank answer
    ("\\pi", "3.14"),  # too few digits of pi
]


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    # Start the workers once so that timing checks below measure checks, not interpreter startup.
    assert verify("\\{1\\}", "\\{1\\}")
    assert verify("x+1", "1+x")
    yield


@pytest.mark.parametrize(("gold", "answer"), EQUIVALENT)
def test_equivalent_pairs(gold, answer):
    assert verify(gold, answer), (gold, answer)


@pytest.mark.parametrize(("gold", "answer"), NOT_EQUIVALENT)
def test_not_equivalent_pairs(gold, answer):
    assert not verify(gold, answer), (gold, answer)


def test_verify_batch_matches_verify():
    pairs = EQUIVALENT + NOT_EQUIVALENT
    results = verify_batch([g for g, _ in pairs], [a for _, a in pairs])
    assert results == [True] * len(EQUIVALENT) + [False] * len(NOT_EQUIVALENT)


def test_verify_batch_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        verify_batch(["1", "2"], ["1"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the total is \\boxed{42}.", "42"),  # a boxed answer
        ("first \\boxed{1} then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),  # the last box, nested braces kept
        ("\\boxed{7} and a truncated \\boxed{\\frac{1", "7"),  # an unclosed box falls back to the earlier one
        ("\\boxed 5 is it", "5"),  # \boxed without braces
        ("\\fbox{9}", "9"),  # \fbox counts as a box
        ("48/2 = 24\n#### 1,234\n", "1,234"),  # GSM8K's final line
        ("Thus the answer is $\\frac{1}{2}$. I hope it is correct.", "$\\frac{1}{2}$"),  # Minerva style
        ("The answer is: 3.5.", "3.5"),  # a decimal point is not the end of the sentence
        ("Action: finish[[1, 2)]", "[1, 2)"),  # an interval inside finish[...]
        ("Thought: done\nAction: finish[12]", "12"),  # ReAct finish
        ("we get 3 apples, then 45.", "45"),  # the last number
        ("costs -1,250.50 in total", "-1,250.50"),  # signs, separators and decimals
        ("no numbers here", None),  # nothing to extract
        ("", None),  # empty response
        ("\\boxed{}", None),  # an empty box is no answer
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_prefers_box_over_later_numbers():
    assert extract_answer("The result is \\boxed{10}. Check: 2 + 8 = 10, not 11.") == "10"


def test_normalize_answer_is_conservative():
    assert normalize_answer("$1,234$") == "1234"
    assert normalize_answer("\\$18.50") == "18.50"
    assert normalize_answer("2 pi") == "2 pi"  # a math word is not a unit
    assert normalize_answer("\\text{(A)}") == "(A)"


def test_math_reward_and_format_reward():
    assert math_reward("so \\boxed{12}", "12") == 1.0
    assert math_reward("so \\boxed{13}", "12") == 0.0
    assert math_reward("I do not know.", "12") == 0.0
    assert math_reward("I do not know.", "12", format_reward=-1.0) == -1.0


def test_bad_gold_and_timeout_rejected():
    with pytest.raises(ValueError, match="gold"):
        verify("", "1")
    with pytest.raises(ValueError, match="timeout"):
        verify("1", "1", timeout=0)


# --------------------------------------------------------------------------- adversarial input

ADVERSARIAL = [
    "9^{9^{9^{9^9}}}",  # power tower: exact evaluation never finishes
    "2^{2^{2^{2^{2^{2}}}}}",
    "99999999^{99999999}",
    "(x+1)^{100000}",
    "\\frac{" * 150 + "1" + "}{2}" * 150,  # deeply nested fractions (over the length cap)
    "{" * 400 + "1" + "}" * 400,  # deeply nested braces
    "x" * 999,  # a long product of symbols
    "1\x00\x1b[31m2\x7f",  # control characters
    "\\sqrt{" * 200 + "2" + "}" * 200,
    "\\int_0^\\infty e^{-x^{x^{x}}} dx",
]


@pytest.mark.parametrize("answer", ADVERSARIAL)
def test_adversarial_answers_return_false_in_bounded_time(answer):
    start = time.monotonic()
    assert verify("1", answer, timeout=2.0) is False
    # Generous bound: the deadline, plus replacing a killed worker on a loaded machine.
    assert time.monotonic() - start < 30


def test_megabyte_responses_are_bounded():
    responses = [
        "x" * 2**20,
        "\\boxed{" + "{" * 2**19 + "}" * 2**19,
        "9" * 2**20,
        "\\boxed{" * 2**17,
        "#### " + "1" * 2**20,
        "Action: finish[" + "[" * 2**20,
    ]
    for response in responses:
        start = time.monotonic()
        assert math_reward(response, "1") == 0.0
        assert time.monotonic() - start < 30


def test_answer_length_is_capped():
    assert not verify("1", "1" + " " * MAX_ANSWER_CHARS)


def test_overrun_kills_and_replaces_the_worker():
    pool = get_verifier_pool()
    before = set(pool.worker_pids())
    # A 999-symbol product takes sympy about a second: far beyond this deadline, so the worker is killed.
    start = time.monotonic()
    assert verify("2", "x" * 999, timeout=0.3) is False
    assert time.monotonic() - start < 5
    after = set(pool.worker_pids())
    killed = before - after
    assert killed, "the overrunning worker should have been replaced"
    for pid in killed:
        assert not _alive(pid)
    assert verify("\\{1,2\\}", "\\{2,1\\}")  # the pool still works


def test_verify_from_many_threads():
    pairs = [("\\{1,2\\}", "\\{2,1\\}", True), ("x+1", "1+x", True), ("[1,2)", "(1,2)", False), ("12", "12.0", True)]
    errors, results = [], []

    def work():
        try:
            for gold, answer, expected in pairs * 3:
                results.append(verify(gold, answer) == expected)
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert len(results) == 6 * 12 and all(results)


def test_adversarial_in_threads_stay_bounded():
    outcomes = []

    def work(answer):
        outcomes.append(verify("1", answer, timeout=1.0))

    threads = [threading.Thread(target=work, args=(a,)) for a in ADVERSARIAL[:4]]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert outcomes == [False] * 4
    assert time.monotonic() - start < 60


def test_verify_in_a_daemonic_forked_worker():
    # Data-loader workers are daemonic forked processes, which multiprocessing forbids to have
    # children; the pool uses plain subprocesses, and a forked child starts its own pool.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def child(q):
        q.put((verify("\\{1,2\\}", "\\{2,1\\}"), verify("[1,2)", "(1,2)")))
        shutdown_verifier_pool()

    process = context.Process(target=child, args=(queue,), daemon=True)
    process.start()
    assert queue.get(timeout=120) == (True, False)
    process.join(timeout=30)
    assert process.exitcode == 0
    assert verify("\\{3\\}", "\\{3\\}")  # the parent's pool is untouched


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


def _wait_dead(pids, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def test_shutdown_leaves_no_worker_processes():
    pool = VerifierPool(2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(pool.check("x+1", "1+x", 5.0))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    pids = pool.worker_pids()
    assert results == [True, True] and len(pids) == 2
    pool.shutdown()
    assert _wait_dead(pids)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.check("1", "1", 1.0)


def test_shared_pool_restarts_after_shutdown():
    shutdown_verifier_pool()
    assert verify("x+1", "1+x")  # symbolic: needs a worker
    assert get_verifier_pool().worker_pids()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_workers_die_with_their_parent(ending):
    # The parent starts workers, leaves one busy on a power tower, then exits normally (atexit
    # cleanup) or is SIGKILLed (workers notice through PR_SET_PDEATHSIG).
    script = textwrap.dedent(
        f"""
        import sys, threading, time
        from mulligan.envs.verifiers.math import get_verifier_pool, verify
        verify("x+1", "1+x")
        threading.Thread(target=verify, args=("1", "x" * 999, 60.0), daemon=True).start()
        time.sleep(0.2)
        print(" ".join(map(str, get_verifier_pool().worker_pids())), flush=True)
        if {ending!r} == "sigkill":
            time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in child.stdout.readline().split()]
        assert pids
        if ending == "sigkill":
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        assert _wait_dead(pids), f"workers {pids} outlived their parent"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_pool_size_from_environment(monkeypatch):
    monkeypatch.setenv("MULLIGAN_MATH_VERIFY_WORKERS", "3")
    assert mv.default_pool_size() == 3
    monkeypatch.setenv("MULLIGAN_MATH_VERIFY_WORKERS", "zero")
    with pytest.raises(ValueError, match="MULLIGAN_MATH_VERIFY_WORKERS"):
        mv.default_pool_size()


# --------------------------------------------------------------------------- reward hacking (issue 15)

# Answers to a question whose gold answer is 72 that are not 72: prose after the number that changes
# or denies it, and statements that contradict themselves. math-verify alone drops trailing words
# and keeps the last side of arrows, definitions and ellipses, so every one of these used to verify.
WRONG_FOR_72 = [
    "72 minus one",
    "72 times two",
    "72 or more",
    "72 is not the answer",
    "72 \\text{ or more}",  # the same words inside \text{}
    "72 \\text{ is not the answer}",
    "72 apples and 3 pears",
    "99 = 72",
    "x = 99 = 72",
    "73 \\to 72",
    "73 \\rightarrow 72",
    "73 -> 72",
    "73 \\Rightarrow 72",
    "73 \\implies 72",
    "73 \\mapsto 72",
    "73 := 72",
    "73 =: 72",
    "73 \\coloneqq 72",
    "73 \\equiv 72",
    "73 == 72",
    "73 \\sim 72",
    "71, 72, \\ldots",
    "71, 72, \\dots",
    "71, 72, ...",
    "71 \\\\ 72",  # a line break keeps only the last line
    "71 & 72",
    "71 \\mid 72",
    "71 \\vee 72",
    "\\neg 72",
    "\\not 72",
    "71 1",  # juxtaposed numbers are added (mixed-number rule)
    "71 \\quad 1",
    "70~2",
    "7\\;2",
    "{99 \\atop 72}",  # commands math-verify does not know are dropped: only known ones are allowed
    "99 \\therefore 72",
    "99 \\hookrightarrow 72",
    "\\cancel{99} 72",
    "99 \\vert 72",
    "72 \\setminus 72",
    "99 \\boxed{72}",
]

# Forms of 72 that must stay correct: the number with a real unit, or a true statement.
STILL_72 = [
    "72 dollars",
    "72 \\text{ dollars}",
    "\\$72",
    "72 cm",
    "72 \\text{ cm}^2",
    "72 \\mbox{ square feet}",
    "72 km/h",
    "72 miles per hour",
    "72 minutes",
    "72^\\circ",
    "72°",
    "72 degrees",
    "x = 72",
    "48 + 24 = 72",
    "f(2) = 72",
    "72\\,000 / 1000",
    "\\frac{144}{2}",
]


@pytest.mark.parametrize("answer", WRONG_FOR_72)
def test_words_and_contradictions_do_not_verify(answer):
    assert not verify("72", answer), answer


@pytest.mark.parametrize("answer", STILL_72)
def test_real_units_and_true_statements_still_verify(answer):
    assert verify("72", answer), answer


def test_units_are_a_closed_list():
    assert normalize_answer("18 dollars") == "18"
    assert normalize_answer("5 \\text{ cm}^2") == "5"
    assert normalize_answer("72 apples") == "72 apples"  # a count noun is not a unit
    assert normalize_answer("72 or more") == "72 or more"
    assert normalize_answer("2 m") == "2 m"  # one-letter symbols are variables as often as units
    assert "apples" not in mv.UNIT_WORDS and "dollars" in mv.UNIT_WORDS


def test_the_noun_a_question_counts_is_a_unit_of_that_task():
    question = "A baker sells 1,250 rolls on Monday and twice as many on Tuesday. How many rolls does he sell?"
    units = mv.question_units(question)
    assert units == {"rolls", "roll"}
    assert verify("3750", "3750 rolls", units=units)
    assert not verify("3750", "3750 rolls", units=())  # a count noun is not a unit by itself
    assert not verify("3750", "3750 rolls or more", units=units)
    assert not verify("3750", "3751 rolls", units=units)
    assert mv.question_units("How many more apples than pears? How many boxes?") == {"apples", "apple", "boxes", "box"}
    assert mv.question_units("How much is it? 72 or more?") == frozenset()
    assert math_reward("The answer is 3750 rolls.", "3750", units=units) == 1.0
    assert verify_batch(["3750", "3750"], ["3750 rolls", "3750 rolls"], units=[units, ()]) == [True, False]


def test_a_gold_answer_with_a_text_unit_accepts_that_unit():
    # MATH writes some answers as "4\text{ ways}"; its own word is that task's unit.
    assert verify("4\\text{ ways}", "4")
    assert verify("4\\text{ ways}", "4 ways")
    assert not verify("4\\text{ ways}", "4 or more ways")
    assert not verify("4\\text{ ways}", "5 ways")


def test_statements_allowed_when_the_gold_is_written_the_same_way():
    assert verify("1, 2, \\ldots, n", "1, 2, \\ldots, n")
    assert verify("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}")
    assert not verify("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\3\\end{pmatrix}")


EIGHT_NINES = {"question": "What is 8 * 9?", "answer": "8 * 9 = <<8*9=72>>72\n#### 72"}


@pytest.mark.parametrize(
    "response",
    [
        "So \\boxed{72 \\text{ or more}}.",
        "The answer is 72 minus one.",
        "The answer is 73 \\to 72.",
        "#### 99 = 72",
        "so \\boxed{71, 72, \\ldots}",
    ],
)
def test_math_env_refuses_reward_hacks(response):
    import gymnasium

    import mulligan  # noqa: F401 - registers the ids

    env = gymnasium.make("Mulligan/Math-v0")
    env.reset(options={"task": EIGHT_NINES})
    _, reward, terminated, _, info = env.step(response)
    assert terminated and reward == 0.0 and not info["success"], (response, info)
    env.reset(options={"task": EIGHT_NINES})
    assert env.step("So \\boxed{72 \\text{ dollars}}.")[1] == 1.0


@pytest.mark.parametrize("answer", ["72 or more", "72 is not the answer", "99 = 72", "73 := 72"])
def test_math_react_finish_refuses_reward_hacks(answer):
    import gymnasium

    import mulligan  # noqa: F401 - registers the ids

    env = gymnasium.make("Mulligan/MathReAct-v0")
    env.reset(options={"task": EIGHT_NINES})
    _, reward, _, _, info = env.step(f"Thought: done\nAction: finish[{answer}]")
    assert reward == 0.0 and not info["success"], (answer, info)
    env.reset(options={"task": EIGHT_NINES})
    assert env.step("Thought: done\nAction: finish[72]")[1] == 1.0


# --------------------------------------------------------------------------- worker death (issue 15)


def test_a_worker_killed_while_idle_is_replaced_and_the_check_retried():
    pool = VerifierPool(1)
    try:
        assert pool.check("x+1", "1+x", 30.0)
        (pid,) = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)
        assert _wait_dead([pid])
        assert pool.check("x+1", "1+x", 30.0)  # a correct answer stays correct
        (replacement,) = pool.worker_pids()
        assert replacement != pid
        # Killed between the liveness check and the request (no time to be reaped): still retried.
        os.kill(replacement, signal.SIGKILL)
        assert pool.check("\\{1,2\\}", "\\{2,1\\}", 30.0)
    finally:
        pool.shutdown()


# --------------------------------------------------------------------------- the answer key (issue 11)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}} and not 2", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{\\left\\{ 1, \\{2\\} \\right\\}}", "\\left\\{ 1, \\{2\\} \\right\\}"),
        ("\\boxed{x^{2^{3}}}", "x^{2^{3}}"),
    ],
)
def test_extract_answer_is_a_majority_vote_key(text, expected):
    # RISE's majority vote groups samples by this key: the whole boxed answer, never its last number.
    assert extract_answer(text) == expected
