"""Calico label selectors (libcalico-go/lib/selector): parse once, evaluate against labels.

Supported: all(), global(), has(k), !has(k), k == 'v', k != 'v', k in {'a','b'},
k not in {...}, k contains 'v', k starts with 'v', k ends with 'v', !, &&, || and parentheses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Labels = dict[str, str]
Matcher = Callable[[Labels], bool]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<has>has\(\s*[A-Za-z0-9_./\-]+\s*\))
    | (?P<fn>all\(\s*\)|global\(\s*\))
    | (?P<str>'[^']*'|"[^"]*")
    | (?P<op>&&|\|\||==|!=|!|\(|\)|\{|\}|,)
    | (?P<word>[A-Za-z0-9_./\-]+)
    )""", re.VERBOSE)


class SelectorError(ValueError):
    """The selector does not parse."""


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokens(text: str) -> list[_Tok]:
    out, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos or m.lastgroup is None:
            raise SelectorError(f"cannot parse selector {text!r} at offset {pos}")
        out.append(_Tok(m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


@dataclass
class _Parser:
    toks: list[_Tok]
    i: int = 0

    def peek(self, ahead: int = 0) -> _Tok:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else _Tok("end", "")

    def take(self, text: str | None = None) -> _Tok:
        tok = self.peek()
        if tok.kind == "end" or (text is not None and tok.text != text):
            raise SelectorError(f"expected {text or 'more input'!r}, got {tok.text!r}")
        self.i += 1
        return tok

    def expr(self) -> Matcher:
        left = self.conj()
        while self.peek().text == "||":
            self.take()
            left = _or(left, self.conj())
        return left

    def conj(self) -> Matcher:
        left = self.unary()
        while self.peek().text == "&&":
            self.take()
            left = _and(left, self.unary())
        return left

    def unary(self) -> Matcher:
        tok = self.peek()
        if tok.text == "!":
            self.take()
            return _not(self.unary())
        if tok.text == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        return self.term()

    def term(self) -> Matcher:
        tok = self.take()
        if tok.kind == "fn":
            return lambda labels: True
        if tok.kind == "has":
            key = tok.text[4:-1].strip()
            return lambda labels: key in labels
        if tok.kind != "word":
            raise SelectorError(f"unexpected {tok.text!r}")
        key, op = tok.text, self.peek().text
        if op in ("==", "!="):
            self.take()
            value = self.value()
            if op == "==":
                return lambda labels: labels.get(key) == value
            return lambda labels: labels.get(key) != value
        if op == "in" or (op == "not" and self.peek(1).text == "in"):
            self.take()
            if op == "not":
                self.take("in")
            values = self.values()
            if op == "not":
                return lambda labels: labels.get(key) not in values
            return lambda labels: labels.get(key) in values
        if op == "contains":
            self.take()
            v = self.value()
            return lambda labels: key in labels and v in labels[key]
        if op in ("starts", "ends") and self.peek(1).text == "with":
            self.take()
            self.take("with")
            v = self.value()
            if op == "starts":
                return lambda labels: key in labels and labels[key].startswith(v)
            return lambda labels: key in labels and labels[key].endswith(v)
        raise SelectorError(f"unexpected {op!r} after {key!r}")

    def value(self) -> str:
        tok = self.take()
        if tok.kind != "str":
            raise SelectorError(f"expected a quoted value, got {tok.text!r}")
        return tok.text[1:-1]

    def values(self) -> frozenset[str]:
        self.take("{")
        out: list[str] = []
        while self.peek().text != "}":
            out.append(self.value())
            if self.peek().text == ",":
                self.take()
        self.take("}")
        return frozenset(out)


def _or(a: Matcher, b: Matcher) -> Matcher:
    return lambda labels: a(labels) or b(labels)


def _and(a: Matcher, b: Matcher) -> Matcher:
    return lambda labels: a(labels) and b(labels)


def _not(a: Matcher) -> Matcher:
    return lambda labels: not a(labels)


def parse(text: str) -> Matcher:
    """Compile a selector; an empty selector selects everything (as in policy specs)."""
    if not text or not text.strip():
        return lambda labels: True
    parser = _Parser(_tokens(text))
    matcher = parser.expr()
    if parser.peek().kind != "end":
        raise SelectorError(f"trailing input in selector {text!r}: {parser.peek().text!r}")
    return matcher


def matches(text: str, labels: Labels) -> bool:
    """Evaluate a selector once."""
    return parse(text)(labels)
