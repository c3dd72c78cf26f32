from fractions import Fraction

import pytest

from mulligan.envs.verifiers.calculator import (
    MAX_DEPTH,
    MAX_EXPRESSION_CHARS,
    CalculatorError,
    calculate,
    evaluate,
    format_number,
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("48/2", "24"),
        ("48 / 2 + 3 * 4", "36"),  # precedence
        ("(1 + 2) * 3", "9"),  # parentheses
        ("2**10", "1024"),
        ("2^10", "1024"),  # ^ is accepted for **
        ("2**3**2", "512"),  # ** is right-associative
        ("-2**2", "-4"),  # unary minus binds looser than ** (as in Python)
        ("(-2)**2", "4"),
        ("2**-2", "0.25"),  # negative integer exponents
        ("10 % 3", "1"),
        ("-7 % 3", "2"),  # modulo follows the divisor's sign (as in Python)
        ("7/4", "1.75"),  # terminating decimals are exact
        ("10/3", "3.3333333333"),  # others are rounded to 10 places
        ("0.1 + 0.2", "0.3"),  # exact arithmetic, no float error
        ("1,200 * 0.15", "180"),  # thousands separators
        ("$5 * 3", "15"),  # a currency sign is ignored
        ("3 × 4 ÷ 2 − 1", "5"),  # typographic operators
        ("--3", "3"),
        (".5 * 4", "2"),
        ("  12  ", "12"),
    ],
)
def test_known_values(expression, expected):
    assert calculate(expression) == expected


def test_results_are_exact_fractions():
    assert evaluate("1/3 + 1/6") == Fraction(1, 2)
    assert evaluate("0.1 * 3") == Fraction(3, 10)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x + 1", "names are not supported"),
        ("__import__('os').system('ls')", "names are not supported"),
        ("(1).real", "malformed number"),
        ("sqrt(4)", "names are not supported"),
        ("1e5", "names are not supported"),
        ("1/0", "division by zero"),
        ("5 % 0", "modulo by zero"),
        ("0 ** -1", "division by zero"),
        ("2 ** 0.5", "integer exponents"),
        ("9**9**9", "too large"),
        ("10**1001", "too large"),
        ("999999**999", "too large"),
        ("(1 + 2", r"missing '\)'"),
        ("1 + 2)", r"unexpected '\)'"),
        ("3 4", "unexpected '4'"),
        ("1 +", "unexpected end"),
        ("* 3", "expected a number"),
        ("1.2.3", "malformed number"),
        ("1,23", "malformed number"),
        ("1;2", "unexpected character ';'"),
        ("1" * 61, "more than 60 digits"),
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "nested deeper"),
        ("-" * (MAX_DEPTH + 5) + "1", "nested deeper"),
        ("1+" * MAX_EXPRESSION_CHARS + "1", "longer than"),
    ],
)
def test_errors_explain_themselves(expression, message):
    with pytest.raises(CalculatorError, match=message):
        evaluate(expression)


def test_result_size_is_bounded_across_operations():
    # Each factor is fine on its own; the product is refused before it grows without limit.
    with pytest.raises(CalculatorError, match="too large"):
        evaluate("10**900 * 10**900")


def test_calculator_error_is_a_value_error():
    assert issubclass(CalculatorError, ValueError)


def test_non_string_input_rejected():
    with pytest.raises(CalculatorError, match="string"):
        evaluate(42)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(24), "24"),
        (Fraction(-3), "-3"),
        (Fraction(51, 4), "12.75"),
        (Fraction(-1, 8), "-0.125"),
        (Fraction(2, 3), "0.6666666667"),
        (Fraction(1, 10**12), "0.000000000001"),
        (Fraction(1, 3 * 10**12), "0"),  # rounds away below 10 places
    ],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_format_round_trips_terminating_values():
    for value in [Fraction(7, 4), Fraction(-51, 20), Fraction(123456789, 1000)]:
        assert evaluate(format_number(value)) == value
