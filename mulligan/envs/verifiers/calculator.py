"""A safe arithmetic calculator for ``Mulligan/MathReAct-v0``'s ``calculate[...]`` action.

The expression is untrusted model text, so this module has its own tokenizer and
recursive-descent parser: numbers, ``+ - * / ** %`` (``^`` is accepted for ``**``, and ``×``,
``÷`` and ``−`` for their ASCII forms), parentheses and unary signs. There are no names, no
attributes, no function calls, and nothing reaches ``eval`` or sympy. Arithmetic is exact
(:class:`fractions.Fraction`), with bounds that keep every evaluation fast and small: expression
length, nesting depth, number length, exponent size and result size.

Grammar (``**`` binds tighter than unary minus on its left and is right-associative, as in Python)::

    expression := term (("+" | "-") term)*
    term       := unary (("*" | "/" | "%") unary)*
    unary      := ("+" | "-") unary | power
    power      := atom ("**" unary)?
    atom       := NUMBER | "(" expression ")"
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

#: Longest expression accepted, in characters.
MAX_EXPRESSION_CHARS = 500
#: Deepest nesting of parentheses and unary signs.
MAX_DEPTH = 50
#: Most digits in one number literal.
MAX_NUMBER_DIGITS = 60
#: Largest absolute integer exponent.
MAX_EXPONENT = 1000
#: Largest numerator or denominator of any intermediate result, in bits (about 1,200 digits).
MAX_RESULT_BITS = 4000
#: Decimal places shown for results that do not terminate in decimal.
ROUNDED_DECIMALS = 10

_SYNONYMS = {"×": "*", "÷": "/", "−": "-", "^": "**"}
_OPERATORS = ("**", "+", "-", "*", "/", "%", "(", ")")
_IGNORED = frozenset(" \t\n\r$")


class CalculatorError(ValueError):
    """The expression is not valid arithmetic or exceeds a bound; the message says which."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "number" or "op"
    text: str
    position: int
    value: Fraction | None = None


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(expression):
        char = expression[position]
        if char in _IGNORED:
            position += 1
            continue
        if char in _SYNONYMS:
            tokens.append(_Token("op", _SYNONYMS[char], position))
            position += 1
            continue
        if char.isascii() and (char.isdigit() or char == "."):
            start = position
            while (
                position < len(expression)
                and expression[position].isascii()
                and (expression[position].isdigit() or expression[position] in ".,")
            ):
                position += 1
            literal = expression[start:position].rstrip(",")
            position = start + len(literal)
            tokens.append(_Token("number", literal, start, _parse_number(literal, start)))
            continue
        operator = "**" if expression.startswith("**", position) else char
        if operator in _OPERATORS:
            tokens.append(_Token("op", operator, position))
            position += len(operator)
            continue
        if char.isalpha() or char == "_":
            raise CalculatorError(
                f"names are not supported (found {char!r} at position {position}); use only numbers, "
                "+ - * / ** % and parentheses"
            )
        raise CalculatorError(f"unexpected character {char!r} at position {position}")
    return tokens


def _parse_number(literal: str, position: int) -> Fraction:
    if "," in literal:
        # Thousands separators are fine ("1,200"); anything else with a comma is ambiguous.
        whole, _, decimals = literal.partition(".")
        groups = whole.split(",")
        if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]) and "," not in decimals):
            raise CalculatorError(f"malformed number {literal!r} at position {position}")
        literal = literal.replace(",", "")
    if literal.count(".") > 1 or literal == ".":
        raise CalculatorError(f"malformed number {literal!r} at position {position}")
    if sum(c.isdigit() for c in literal) > MAX_NUMBER_DIGITS:
        raise CalculatorError(f"number at position {position} has more than {MAX_NUMBER_DIGITS} digits")
    return Fraction(literal)


def _check_size(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_RESULT_BITS or value.denominator.bit_length() > MAX_RESULT_BITS:
        raise CalculatorError(f"result too large (more than about {MAX_RESULT_BITS * 3 // 10} digits)")
    return value


class _Parser:
    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take_op(self, *operators: str) -> str | None:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text in operators:
            self.index += 1
            return token.text
        return None

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalculatorError(f"expression nested deeper than {MAX_DEPTH} levels")

    def expression(self) -> Fraction:
        value = self.term()
        while (operator := self.take_op("+", "-")) is not None:
            right = self.term()
            value = _check_size(value + right if operator == "+" else value - right)
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while (operator := self.take_op("*", "/", "%")) is not None:
            right = self.unary()
            if operator == "*":
                value = value * right
            elif right == 0:
                raise CalculatorError("division by zero" if operator == "/" else "modulo by zero")
            else:
                value = value / right if operator == "/" else value % right
            value = _check_size(value)
        return value

    def unary(self) -> Fraction:
        operator = self.take_op("+", "-")
        if operator is None:
            return self.power()
        self.enter()
        value = self.unary()
        self.depth -= 1
        return -value if operator == "-" else value

    def power(self) -> Fraction:
        base = self.atom()
        if self.take_op("**") is None:
            return base
        self.enter()
        exponent = self.unary()
        self.depth -= 1
        return _power(base, exponent)

    def atom(self) -> Fraction:
        token = self.peek()
        if token is None:
            raise CalculatorError("unexpected end of expression: a number or '(' is missing")
        if token.kind == "number":
            self.index += 1
            return token.value
        if token.text == "(":
            self.index += 1
            self.enter()
            value = self.expression()
            self.depth -= 1
            if self.take_op(")") is None:
                raise CalculatorError(f"missing ')' for the '(' at position {token.position}")
            return value
        raise CalculatorError(f"expected a number or '(' at position {token.position}, found {token.text!r}")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise CalculatorError("only integer exponents are supported (no roots)")
    power = exponent.numerator
    if abs(power) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {power} is too large (the limit is {MAX_EXPONENT})")
    if base == 0 and power < 0:
        raise CalculatorError("division by zero (zero to a negative power)")
    # Estimate the size before computing, so that 999**999 is refused without being built.
    largest_part = max(base.numerator.bit_length(), base.denominator.bit_length())
    if (largest_part - 1) * abs(power) > MAX_RESULT_BITS:
        raise CalculatorError(f"result too large (more than about {MAX_RESULT_BITS * 3 // 10} digits)")
    return _check_size(base**power)


def evaluate(expression: str) -> Fraction:
    """Evaluate an arithmetic expression exactly.

    Args:
        expression: Untrusted text such as ``"48/2 + 3**2"`` or ``"1,200 * 0.15"``.

    Returns:
        The exact value.

    Raises:
        CalculatorError: if the expression is empty, malformed, uses names, or exceeds a bound.
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"the expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    tokens = _tokenize(expression)
    if not tokens:
        raise CalculatorError("empty expression")
    parser = _Parser(tokens)
    value = parser.expression()
    leftover = parser.peek()
    if leftover is not None:
        raise CalculatorError(f"unexpected {leftover.text!r} at position {leftover.position}")
    return value


def format_number(value: Fraction) -> str:
    """A value as people write it: ``24``, ``12.75``, or a decimal rounded to 10 places (``3.3333333333``).

    Terminating decimals are exact; others are rounded to :data:`ROUNDED_DECIMALS` places.
    """
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        places = 0
        scaled = value
        while scaled.denominator != 1:
            scaled *= 10
            places += 1
        if places <= 20:
            return _fixed(value, places)
    return _fixed(value, ROUNDED_DECIMALS).rstrip("0").rstrip(".")


def _fixed(value: Fraction, places: int) -> str:
    scaled = round(value * 10**places)  # exact rational rounding, half to even
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled)).rjust(places + 1, "0")
    whole, decimals = digits[: len(digits) - places], digits[len(digits) - places :]
    return f"{sign}{whole}.{decimals}" if places else f"{sign}{whole}"


def calculate(expression: str) -> str:
    """Evaluate ``expression`` and format the result with :func:`format_number`.

    Raises:
        CalculatorError: as :func:`evaluate`.
    """
    return format_number(evaluate(expression))
