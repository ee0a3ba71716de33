"""Rainmeter's action and formula syntax, re-implemented for tests.

* ``split_bangs``: CommandHandler::ExecuteCommand splits ``[!A x][!B y]`` by bracket depth
  (``\"\"\"`` quoting skipped); ``parse_args``: CommandHandler::ParseString splits arguments at
  spaces, keeps "quoted" ones whole and strips the quotes.
* ``evaluate``: the subset of Rainmeter's MathParser the skin uses: numbers, measure names,
  + - * / %, comparisons (= is equality), && and ||, ``a ? b : c``, and Clamp/Ceil/Floor/Round/Min/Max/Abs.
* ``parse_formula``: ConfigParser::ParseFormula only evaluates text wrapped in ( ... ).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

FUNCTIONS: dict[str, Callable[..., float]] = {
    "clamp": lambda x, lo, hi: min(max(x, lo), hi), "ceil": math.ceil, "floor": math.floor,
    "round": lambda x, n=0: _rainmeter_round(x, int(n)), "min": min, "max": max, "abs": abs, "trunc": math.trunc,
}


def _rainmeter_round(x: float, sharpness: int = 0) -> float:
    """MathParser's round: scale by 10 per digit, add +-0.5, floor/ceil, scale back (not Python's
    round-half-even: Round(9.35, 1) is 9.4 here, 9.3 in Python)."""
    coef = 10.0
    if sharpness < 0:
        coef, sharpness = 0.1, -sharpness
    for _ in range(sharpness):
        x *= coef
    x = x + (0.5 if x >= 0 else -0.5)
    x = math.floor(x) if x >= 0 else math.ceil(x)
    for _ in range(sharpness):
        x /= coef
    return float(x)


_TOKEN = re.compile(r"\s*(\d+\.?\d*|\.\d+|[A-Za-z_][A-Za-z0-9_]*|<=|>=|<>|!=|&&|\|\||[-+*/%()?:<>=,])")


def split_bangs(action: str) -> list[str]:
    """'[!A 1][!B "x y"]' -> ['!A 1', '!B "x y"']; text without brackets is one command."""
    action = action.strip()
    if not action.startswith("["):
        return [action] if action else []
    out, depth, start, i = [], 0, 0, 0
    while i < len(action):
        ch = action[i]
        if action.startswith('"""', i):
            end = action.find('"""', i + 3)
            i = (end + 3) if end != -1 else len(action)
            continue
        if ch == "[":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                out.append(action[start + 1 : i].strip())
        i += 1
    if depth != 0:
        raise ValueError(f"unbalanced brackets in action: {action}")
    return out


def parse_args(text: str) -> list[str]:
    """Bang arguments: split at spaces, "quoted" (or \"\"\"quoted\"\"\") parts kept whole, quotes removed."""
    args, rest = [], text
    while rest.strip():
        rest = rest.lstrip(" ")
        if rest.startswith('"""'):
            end = rest.find('"""', 3)
            end = len(rest) if end == -1 else end
            args.append(rest[3:end])
            rest = rest[end + 3 :]
        elif rest.startswith('"'):
            end = rest.find('"', 1)
            end = len(rest) if end == -1 else end
            args.append(rest[1:end])
            rest = rest[end + 1 :]
        else:
            end = rest.find(" ")
            end = len(rest) if end == -1 else end
            args.append(rest[:end].replace('"', ""))
            rest = rest[end:]
    return args


def evaluate(formula: str, lookup: Callable[[str], float]) -> float:
    """Evaluate a Rainmeter formula; `lookup(name)` gives a measure's number (KeyError if unknown)."""
    tokens = [t for t in _TOKEN.findall(formula)]
    if "".join(tokens) != re.sub(r"\s+", "", formula):
        raise ValueError(f"cannot tokenize formula: {formula!r}")
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal pos
        token = tokens[pos]
        if expected is not None and token != expected:
            raise ValueError(f"expected {expected!r}, got {token!r} in {formula!r}")
        pos += 1
        return token

    def conditional() -> float:
        cond = comparison()
        if peek() == "?":
            take("?")
            yes = conditional()
            take(":")
            no = conditional()
            return yes if cond else no
        return cond

    def comparison() -> float:
        left = additive()
        ops = {"<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
               ">=": lambda a, b: a >= b, "=": lambda a, b: a == b, "<>": lambda a, b: a != b,
               "!=": lambda a, b: a != b, "&&": lambda a, b: bool(a) and bool(b),
               "||": lambda a, b: bool(a) or bool(b)}  # same priority as comparisons, as in MathParser
        while peek() in ops:
            op = take()
            left = float(ops[op](left, additive()))
        return left

    def additive() -> float:
        value = multiplicative()
        while peek() in ("+", "-"):
            value = value + multiplicative() if take() == "+" else value - multiplicative()
        return value

    def multiplicative() -> float:
        value = unary()
        while peek() in ("*", "/", "%"):
            op, rhs = take(), unary()
            value = value * rhs if op == "*" else (value / rhs if op == "/" else math.fmod(value, rhs))
        return value

    def unary() -> float:
        if peek() == "-":
            take()
            return -unary()
        return primary()

    def primary() -> float:
        token = take()
        if token == "(":
            value = conditional()
            take(")")
            return value
        if re.fullmatch(r"\d+\.?\d*|\.\d+", token):
            return float(token)
        if peek() == "(" and token.lower() in FUNCTIONS:
            take("(")
            args = [conditional()]
            while peek() == ",":
                take(",")
                args.append(conditional())
            take(")")
            return float(FUNCTIONS[token.lower()](*args))
        return float(lookup(token))

    result = conditional()
    if pos != len(tokens):
        raise ValueError(f"trailing tokens in formula {formula!r}: {tokens[pos:]}")
    return result


def parse_formula(text: str, lookup: Callable[[str], float] = lambda name: 0.0) -> float | None:
    """ParseFormula: a number for '(...)' text that evaluates, else None (text stays text)."""
    text = text.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return None
    try:
        return evaluate(text, lookup)
    except (ValueError, KeyError, ZeroDivisionError, IndexError):
        return None


def format_number(value: float) -> str:
    """'%.5f' with trailing zeros (and a bare '.') removed, as SetVariable/WriteKeyValue write it."""
    text = f"{value:.5f}".rstrip("0")
    return text[:-1] if text.endswith(".") else text
