"""The audience language of ``[[wave]] audience = "..."``: tokenizer, parser, SQL compiler.

    expr    := or
    or      := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | "(" expr ")" | "all" | compare
    compare := field ("==" | "!=" | "<" | "<=" | ">" | ">=") value | field ["not"] "in" "[" value, ... "]"
    field   := lifetime_value | orders_count | last_order_at | tier | attributes.NAME
    value   := NUMBER | "STRING" | true | false | now [("+" | "-") DURATION]     (DURATION: 90d, 12h, 2w)

Nothing is ever evaluated as Python: the tree compiles to SQLAlchemy expressions with bound
parameters. A comparison on a missing value (no customer row, no such attribute) is false;
``not`` turns it into true.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, or_, true

#: the customer columns and their kinds; callers pass the actual columns to audience_sql
FIELDS = {"lifetime_value": "number", "orders_count": "number", "last_order_at": "time", "tier": "text"}
KEYWORDS = {"and", "or", "not", "in", "all", "now", "true", "false"}
COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<duration>\d+(?:\.\d+)?[mhdw])(?![A-Za-z0-9_.])
      | (?P<number>-?\d+(?:\.\d+)?)(?![A-Za-z0-9_.])
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)?)
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\+|-)""",
    re.VERBOSE,
)


class AudienceError(ValueError):
    """A bad expression; ``column`` is 1-based within the expression."""

    def __init__(self, message: str, column: int):
        super().__init__(f"{message} (column {column})")
        self.message = message
        self.column = column


@dataclass(frozen=True)
class Token:
    kind: str  #: space, duration, number, string, name, op, end
    text: str
    column: int


def tokenize(expr: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            if expr[pos] in "\"'":
                raise AudienceError("unterminated string", pos + 1)
            if expr[pos] == "=":
                raise AudienceError("use == to compare", pos + 1)
            raise AudienceError(f"unexpected character {expr[pos]!r}", pos + 1)
        if match.lastgroup != "space":
            tokens.append(Token(match.lastgroup or "", match.group(), pos + 1))
        pos = match.end()
    tokens.append(Token("end", "", len(expr) + 1))
    return tokens


# --- the tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class All:
    pass


@dataclass(frozen=True)
class Not:
    inner: Any


@dataclass(frozen=True)
class BoolOp:
    op: str  #: "and" or "or"
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Now:
    offset: timedelta


@dataclass(frozen=True)
class Compare:
    field: str  #: a FIELDS key, or "attributes.NAME"
    op: str  #: a COMPARISONS member, "in" or "not in"
    value: Any  #: Decimal, str, bool, Now, or a tuple of those for in


class _Parser:
    def __init__(self, expr: str):
        self.tokens = tokenize(expr)
        self.pos = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def is_word(self, word: str) -> bool:
        return self.token.kind == "name" and self.token.text == word

    def expect(self, text: str, what: str) -> Token:
        if self.token.text != text or self.token.kind not in ("op", "name"):
            raise AudienceError(f"expected {what}, found {self.describe()}", self.token.column)
        return self.take()

    def describe(self) -> str:
        return "end of expression" if self.token.kind == "end" else repr(self.token.text)

    def parse(self) -> Any:
        if self.token.kind == "end":
            raise AudienceError("empty audience: write all for everybody", 1)
        node = self.or_()
        if self.token.kind != "end":
            raise AudienceError(f"expected and, or or the end, found {self.describe()}", self.token.column)
        return node

    def or_(self) -> Any:
        parts = [self.and_()]
        while self.is_word("or"):
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def and_(self) -> Any:
        parts = [self.unary()]
        while self.is_word("and"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def unary(self) -> Any:
        if self.is_word("not"):
            self.take()
            return Not(self.unary())
        if self.token.text == "(" and self.token.kind == "op":
            self.take()
            node = self.or_()
            self.expect(")", "')'")
            return node
        if self.is_word("all"):
            self.take()
            return All()
        return self.compare()

    def compare(self) -> Compare:
        token = self.take()
        if token.kind != "name" or token.text in KEYWORDS:
            raise AudienceError(
                f"expected a field such as lifetime_value, found {_show(token)}", token.column
            )
        field = token.text
        kind = _kind(field, token.column)
        op_token = self.token
        if self.is_word("not"):
            self.take()
            if not self.is_word("in"):
                raise AudienceError("expected in after not", self.token.column)
        if self.is_word("in"):
            self.take()
            op = "not in" if op_token.text == "not" else "in"
            self.expect("[", "'[' to start a list")
            values = [self.value(kind, field)]
            while self.token.text == ",":
                self.take()
                values.append(self.value(kind, field))
            self.expect("]", "',' or ']'")
            return Compare(field, op, tuple(values))
        if op_token.kind != "op" or op_token.text not in COMPARISONS:
            raise AudienceError(
                f"expected a comparison (==, !=, <, <=, >, >=, in) after {field}", op_token.column
            )
        self.take()
        value = self.value(kind, field)
        if isinstance(value, str | bool) and op_token.text not in ("==", "!="):
            raise AudienceError(f"{op_token.text} compares numbers and times, not text", op_token.column)
        return Compare(field, op_token.text, value)

    def value(self, kind: str | None, field: str) -> Any:
        token = self.take()
        if token.kind == "number":
            value: Any = Decimal(token.text)
        elif token.kind == "string":
            value = _unquote(token.text)
        elif token.kind == "name" and token.text in ("true", "false"):
            value = token.text == "true"
        elif token.kind == "name" and token.text == "now":
            value = Now(self.offset())
        elif token.kind == "duration":
            raise AudienceError(f"a duration needs now: write now - {token.text}", token.column)
        else:
            raise AudienceError(f"expected a value, found {_show(token)}", token.column)
        actual = "number" if isinstance(value, Decimal) else "time" if isinstance(value, Now) else "text"
        if isinstance(value, bool):
            actual = "bool"
        if kind is not None and kind != actual:
            raise AudienceError(f"{field} is a {kind}, but this value is a {actual}", token.column)
        if kind is None and actual == "time":
            raise AudienceError("attributes cannot be compared with now", token.column)
        return value

    def offset(self) -> timedelta:
        if not (self.token.kind == "op" and self.token.text in "+-"):
            return timedelta(0)
        sign = -1 if self.take().text == "-" else 1
        token = self.take()
        if token.kind != "duration":
            raise AudienceError(
                f"expected a duration like 90d, 12h or 2w, found {_show(token)}", token.column
            )
        return sign * timedelta(seconds=float(token.text[:-1]) * _UNITS[token.text[-1]])


def _show(token: Token) -> str:
    return "end of expression" if token.kind == "end" else repr(token.text)


def _kind(field: str, column: int) -> str | None:
    """The field's kind; None for free-form attributes (the value decides)."""
    if field.startswith("attributes."):
        return None
    if field not in FIELDS:
        known = ", ".join([*FIELDS, "attributes.NAME"])
        raise AudienceError(f"unknown field {field!r} (known: {known})", column)
    return FIELDS[field]


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse(expr: str) -> Any:
    """The expression's tree, or AudienceError with the column of the first problem."""
    if not isinstance(expr, str):
        raise AudienceError("audience must be a string", 1)
    return _Parser(expr).parse()


def check(expr: str) -> None:
    """Raise AudienceError if ``expr`` is not a valid audience (validation uses this)."""
    parse(expr)


# --- to SQL --------------------------------------------------------------------------------


def audience_sql(
    expr: str, columns: dict[str, ColumnElement], attributes: ColumnElement, now: datetime
) -> ColumnElement[bool]:
    """Compile an audience expression to a WHERE condition over the given columns."""
    return _compile(parse(expr), columns, attributes, now)


def _compile(node: Any, columns: dict, attributes: ColumnElement, now: datetime) -> ColumnElement[bool]:
    if isinstance(node, All):
        return true()
    if isinstance(node, Not):
        return not_(_compile(node.inner, columns, attributes, now))
    if isinstance(node, BoolOp):
        parts = [_compile(part, columns, attributes, now) for part in node.parts]
        return and_(*parts) if node.op == "and" else or_(*parts)
    return _compare(node, columns, attributes, now)


_OPERATORS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare(node: Compare, columns: dict, attributes: ColumnElement, now: datetime) -> ColumnElement[bool]:
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    sample = values[0]
    if node.field.startswith("attributes."):
        item = attributes[node.field.partition(".")[2]]
        column = (
            item.as_float()
            if isinstance(sample, Decimal)
            else item.as_boolean()
            if isinstance(sample, bool)
            else item.as_string()
        )
    else:
        column = columns[node.field]
    bound = [_bind(v, now) for v in values]
    if node.op in ("in", "not in"):
        condition = column.in_(bound)
        if node.op == "not in":
            condition = not_(condition)
    else:
        condition = _OPERATORS[node.op](column, bound[0])
    # a missing value (outer join, absent attribute) makes the comparison false, never NULL
    return and_(column.is_not(None), condition)


def _bind(value: Any, now: datetime) -> Any:
    if isinstance(value, Now):
        return now + value.offset
    if isinstance(value, Decimal):
        # floats bind on every driver without SQLite's Decimal warning; money has 2 decimals
        return int(value) if value == value.to_integral_value() else float(value)
    return value
