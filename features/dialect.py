"""A parser for the OpenMLDB SQL statements the embedded engine executes.

OpenMLDB's compiler validates queries but exposes no syntax tree to Python, and no maintained
Python SQL parser knows OpenMLDB's dialect (ROWS_RANGE frames, `1h` durations, EXCLUDE
CURRENT_TIME, MAXSIZE, LOAD DATA / DEPLOY). So this module parses the subset the engine runs and
raises UnsupportedStatementError, naming the construct, for everything else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from features.exceptions import UnsupportedStatementError
from features.schema import Column, Index, canonical_type

# --- expressions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnRef:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Placeholder:
    """A `?` parameter, bound from executemany/execute parameters."""

    index: int


@dataclass(frozen=True)
class Call:
    name: str  # lower case
    args: tuple[Expr, ...]
    window: str | None = None  # `OVER w`
    distinct: bool = False
    star: bool = False  # count(*)


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / % = != < <= > >= and or
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Unary:
    op: str  # - not
    operand: Expr


@dataclass(frozen=True)
class IsNull:
    operand: Expr
    negated: bool


@dataclass(frozen=True)
class Cast:
    operand: Expr
    type: str


Expr = ColumnRef | Literal | Placeholder | Call | Binary | Unary | IsNull | Cast

# --- statements -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSpec:
    """A named window. For ROWS_RANGE `preceding` is milliseconds, for ROWS a row count;
    None means UNBOUNDED PRECEDING. The frame always ends at CURRENT ROW."""

    name: str
    partition_by: tuple[str, ...]
    order_by: str
    frame: str  # "rows" | "rows_range"
    preceding: int | None
    exclude_current_time: bool = False
    maxsize: int | None = None


@dataclass(frozen=True)
class SelectItem:
    expr: Expr | None  # None = `*`
    alias: str | None


@dataclass(frozen=True)
class Select:
    items: tuple[SelectItem, ...]
    table: str
    db: str | None
    where: Expr | None
    windows: dict[str, WindowSpec]
    limit: int | None
    outfile: str | None = None
    outfile_options: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # the SELECT text without INTO OUTFILE, for the compiler


@dataclass(frozen=True)
class CreateDatabase:
    name: str
    if_not_exists: bool


@dataclass(frozen=True)
class UseDatabase:
    name: str


@dataclass(frozen=True)
class CreateTable:
    db: str | None
    name: str
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...]
    if_not_exists: bool


@dataclass(frozen=True)
class DropTable:
    db: str | None
    name: str
    if_exists: bool


@dataclass(frozen=True)
class SetVariable:
    name: str  # without @@, lower case, `global.`/`session.` removed
    value: Any


@dataclass(frozen=True)
class LoadData:
    path: str
    db: str | None
    table: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Insert:
    db: str | None
    table: str
    columns: tuple[str, ...] | None
    rows: tuple[tuple[Expr, ...], ...]


@dataclass(frozen=True)
class Deploy:
    name: str
    options: dict[str, Any]
    select: Select
    if_not_exists: bool


@dataclass(frozen=True)
class DropDeployment:
    db: str | None
    name: str


@dataclass(frozen=True)
class Show:
    what: str  # tables | deployments | databases


Statement = (CreateDatabase | UseDatabase | CreateTable | DropTable | SetVariable | LoadData
             | Insert | Select | Deploy | DropDeployment | Show)

# --- tokenizer ------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<quoted>`[^`]+`)
  | (?P<duration>\d+[smhd](?![\w]))
  | (?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?|\.\d+)
  | (?P<variable>@@[\w.]+)
  | (?P<word>[A-Za-z_][\w]*)
  | (?P<op><=|>=|<>|!=|==|[=<>+\-*/%(),.;?])
    """,
    re.VERBOSE | re.DOTALL,
)
_DURATION_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper()


def tokenize(sql: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN_RE.match(sql, pos)
        if match is None:
            raise UnsupportedStatementError(f"cannot parse SQL near {sql[pos:pos + 30]!r}")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


def split_statements(sql: str) -> list[str]:
    """Split a script on top-level semicolons (strings and comments respected)."""
    parts, start = [], 0
    for token in tokenize(sql):
        if token.text == ";":
            parts.append(sql[start:token.pos])
            start = token.pos + 1
    parts.append(sql[start:])
    return [p.strip() for p in parts if p.strip() and tokenize(p)]


# --- parser ---------------------------------------------------------------------------------


class _Parser:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.tokens = tokenize(sql)
        while self.tokens and self.tokens[-1].text == ";":
            self.tokens.pop()
        self.i = 0
        self.placeholders = 0

    # token helpers
    def peek(self, offset: int = 0) -> Token | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def at(self, *words: str) -> bool:
        """True if the next tokens are these keywords/symbols (case-insensitive)."""
        for k, word in enumerate(words):
            token = self.peek(k)
            if token is None or token.upper != word.upper() or token.kind == "string":
                return False
        return True

    def accept(self, *words: str) -> bool:
        if self.at(*words):
            self.i += len(words)
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            found = self.peek()
            raise UnsupportedStatementError(
                f"expected {' '.join(words)!r} but found "
                f"{found.text if found else 'end of statement'!r} in: {self.sql.strip()[:200]}"
            )

    def next(self) -> Token:
        token = self.peek()
        if token is None:
            raise UnsupportedStatementError(
                f"unexpected end of statement: {self.sql.strip()[:200]}")
        self.i += 1
        return token

    def done(self) -> bool:
        return self.i >= len(self.tokens)

    def ident(self) -> str:
        token = self.next()
        if token.kind == "quoted":
            return token.text[1:-1]
        if token.kind != "word":
            raise UnsupportedStatementError(f"expected a name, found {token.text!r}")
        return token.text

    def qualified(self) -> tuple[str | None, str]:
        first = self.ident()
        if self.accept("."):
            return first, self.ident()
        return None, first

    def string(self) -> str:
        token = self.next()
        if token.kind != "string":
            raise UnsupportedStatementError(f"expected a quoted string, found {token.text!r}")
        quote = token.text[0]
        return token.text[1:-1].replace(quote * 2, quote)

    def integer(self) -> int:
        token = self.next()
        if token.kind != "number" or not token.text.isdigit():
            raise UnsupportedStatementError(f"expected an integer, found {token.text!r}")
        return int(token.text)

    def unsupported(self, what: str) -> UnsupportedStatementError:
        return UnsupportedStatementError(
            f"the embedded engine does not support {what}: {self.sql.strip()[:200]}")

    # statements
    def statement(self) -> Statement:
        if self.accept("CREATE", "DATABASE"):
            if_not_exists = self.accept("IF", "NOT", "EXISTS")
            stmt: Statement = CreateDatabase(self.ident(), if_not_exists)
        elif self.accept("USE"):
            stmt = UseDatabase(self.ident())
        elif self.accept("CREATE", "TABLE"):
            stmt = self.create_table()
        elif self.accept("DROP", "TABLE"):
            if_exists = self.accept("IF", "EXISTS")
            db, name = self.qualified()
            stmt = DropTable(db, name, if_exists)
        elif self.accept("DROP", "DEPLOYMENT"):
            db, name = self.qualified()
            stmt = DropDeployment(db, name)
        elif self.accept("SET"):
            stmt = self.set_variable()
        elif self.accept("LOAD", "DATA", "INFILE"):
            path = self.string()
            self.expect("INTO", "TABLE")
            db, table = self.qualified()
            stmt = LoadData(path, db, table, self.options() if self.at("OPTIONS") else {})
        elif self.accept("INSERT"):
            stmt = self.insert()
        elif self.at("SELECT"):
            stmt = self.select()
        elif self.accept("DEPLOY"):
            if_not_exists = self.accept("IF", "NOT", "EXISTS")
            name = self.ident()
            options = self.options() if self.at("OPTIONS") else {}
            select = self.select()
            if select.outfile:
                raise self.unsupported("INTO OUTFILE in DEPLOY")
            stmt = Deploy(name, options, select, if_not_exists)
        elif self.accept("SHOW"):
            what = self.ident().lower()
            if what not in {"tables", "deployments", "databases"}:
                raise self.unsupported(f"SHOW {what.upper()}")
            stmt = Show(what)
        else:
            first = self.peek()
            raise UnsupportedStatementError(
                "the embedded engine does not support the statement "
                f"{(first.text.upper() if first else '(empty)')!r}: {self.sql.strip()[:200]}")
        if not self.done():
            raise self.unsupported(f"the clause starting at {self.next().text!r}")
        return stmt

    def options(self) -> dict[str, Any]:
        self.expect("OPTIONS")
        self.expect("(")
        options: dict[str, Any] = {}
        while not self.accept(")"):
            key = self.ident().lower()
            self.expect("=")
            options[key] = self.literal_value()
            self.accept(",")
        return options

    def literal_value(self) -> Any:
        token = self.next()
        if token.kind == "string":
            return token.text[1:-1]
        if token.kind == "number":
            return float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
        if token.kind == "duration":
            return token.text
        if token.upper in {"TRUE", "FALSE"}:
            return token.upper == "TRUE"
        if token.kind == "word":
            return token.text
        raise UnsupportedStatementError(f"expected a value, found {token.text!r}")

    def set_variable(self) -> SetVariable:
        token = self.next()
        if token.kind != "variable":
            raise self.unsupported("SET without an @@variable")
        name = token.text[2:].lower()
        for scope in ("global.", "session."):
            name = name.removeprefix(scope)
        self.expect("=")
        return SetVariable(name, self.literal_value())

    def create_table(self) -> CreateTable:
        if_not_exists = self.accept("IF", "NOT", "EXISTS")
        db, name = self.qualified()
        self.expect("(")
        columns: list[Column] = []
        indexes: list[Index] = []
        while True:
            if self.accept("INDEX"):
                indexes.append(self.index_spec())
            else:
                col_name = self.ident()
                col_type = canonical_type(self.ident())
                not_null = self.accept("NOT", "NULL")
                if self.at("DEFAULT"):
                    raise self.unsupported("column DEFAULT values")
                columns.append(Column(col_name, col_type, not_null))
            if self.accept(")"):
                break
            self.expect(",")
        if self.at("OPTIONS"):
            self.options()  # partitionnum / replicanum / storage_mode: cluster layout only
        return CreateTable(db, name, tuple(columns), tuple(indexes), if_not_exists)

    def index_spec(self) -> Index:
        self.expect("(")
        spec: dict[str, Any] = {}
        while not self.accept(")"):
            key = self.ident().lower()
            self.expect("=")
            if self.accept("("):
                values = []
                while not self.accept(")"):
                    values.append(self.literal_value())
                    self.accept(",")
                spec[key] = tuple(values)
            else:
                spec[key] = self.literal_value()
            self.accept(",")
        if "key" not in spec or "ts" not in spec:
            raise self.unsupported("an INDEX without KEY and TS")
        keys = spec["key"] if isinstance(spec["key"], tuple) else (spec["key"],)
        ttl_type = str(spec.get("ttl_type", "absolute")).lower()
        ttl = spec.get("ttl", 0)
        minutes, latest = 0, 0
        if ttl_type == "absolute":
            minutes = _ttl_minutes(ttl)
        elif ttl_type == "latest":
            latest = int(ttl)
        elif ttl_type in {"absandlat", "absorlat"} and isinstance(ttl, tuple):
            minutes, latest = _ttl_minutes(ttl[0]), int(ttl[1])
        else:
            raise self.unsupported(f"TTL_TYPE={ttl_type} with TTL={ttl!r}")
        return Index(tuple(str(k) for k in keys), str(spec["ts"]), minutes, latest, ttl_type)

    def insert(self) -> Insert:
        self.accept("OR", "IGNORE")
        self.expect("INTO")
        db, table = self.qualified()
        columns: tuple[str, ...] | None = None
        if self.accept("("):
            names = [self.ident()]
            while self.accept(","):
                names.append(self.ident())
            self.expect(")")
            columns = tuple(names)
        self.expect("VALUES")
        rows = []
        while True:
            self.expect("(")
            values = [self.expr()]
            while self.accept(","):
                values.append(self.expr())
            self.expect(")")
            rows.append(tuple(values))
            if not self.accept(","):
                break
        return Insert(db, table, columns, tuple(rows))

    def select(self) -> Select:
        start = self.peek()
        assert start is not None
        self.expect("SELECT")
        if self.at("DISTINCT"):
            raise self.unsupported("SELECT DISTINCT")
        items = [self.select_item()]
        while self.accept(","):
            items.append(self.select_item())
        self.expect("FROM")
        if self.at("("):
            raise self.unsupported("subqueries in FROM")
        db, table = self.qualified()
        if self.peek() is not None and self.peek().kind == "word" and not self.at_clause():  # type: ignore[union-attr]
            self.ident()  # table alias
        if self.at("LAST", "JOIN") or self.at("JOIN") or self.at(","):
            raise self.unsupported("joins")
        where = self.expr() if self.accept("WHERE") else None
        if self.at("GROUP") or self.at("HAVING") or self.at("ORDER"):
            raise self.unsupported(f"{self.next().upper} clauses in SELECT")
        windows: dict[str, WindowSpec] = {}
        if self.accept("WINDOW"):
            while True:
                spec = self.window_spec()
                windows[spec.name] = spec
                if not self.accept(","):
                    break
        limit = self.integer() if self.accept("LIMIT") else None
        end = self.peek()
        text = self.sql[start.pos:end.pos if end else len(self.sql)].strip()
        outfile, outfile_options = None, {}
        if self.accept("INTO", "OUTFILE"):
            outfile = self.string()
            if self.at("OPTIONS"):
                outfile_options = self.options()
        return Select(tuple(items), table, db, where, windows, limit, outfile, outfile_options,
                      text)

    def at_clause(self) -> bool:
        return any(self.at(w) for w in ("WHERE", "WINDOW", "LIMIT", "INTO", "GROUP", "ORDER",
                                          "HAVING", "LAST", "JOIN", "OPTIONS", "SELECT"))

    def select_item(self) -> SelectItem:
        if self.accept("*"):
            return SelectItem(None, None)
        expr = self.expr()
        token = self.peek()
        bare_alias = token is not None and token.kind in {"word", "quoted"} \
            and not self.at("FROM")
        alias = self.ident() if self.accept("AS") or bare_alias else None
        return SelectItem(expr, alias)

    def window_spec(self) -> WindowSpec:
        name = self.ident()
        self.expect("AS")
        self.expect("(")
        if self.at("UNION"):
            raise self.unsupported("WINDOW ... UNION")
        self.expect("PARTITION", "BY")
        keys = [self.ident()]
        while self.accept(","):
            keys.append(self.ident())
        self.expect("ORDER", "BY")
        order_by = self.ident()
        if self.at("DESC") or self.at(","):
            raise self.unsupported("window ORDER BY other than one ascending column")
        self.accept("ASC")
        if self.accept("ROWS_RANGE"):
            frame = "rows_range"
        elif self.accept("ROWS"):
            frame = "rows"
        else:
            raise self.unsupported("a window without a ROWS or ROWS_RANGE frame")
        self.expect("BETWEEN")
        preceding = self.frame_bound(frame)
        self.expect("AND")
        if not (self.accept("CURRENT", "ROW") or self.at_zero_preceding()):
            raise self.unsupported("a window frame that does not end at CURRENT ROW")
        exclude_current_time, maxsize = False, None
        while not self.accept(")"):
            if self.accept("EXCLUDE", "CURRENT_TIME"):
                exclude_current_time = True
            elif self.accept("MAXSIZE"):
                maxsize = self.integer()
            else:
                raise self.unsupported(f"the window option {self.next().text!r}")
        return WindowSpec(name, tuple(keys), order_by, frame, preceding, exclude_current_time,
                          maxsize)

    def at_zero_preceding(self) -> bool:
        token = self.peek()
        if token and token.text in {"0", "0s", "0m", "0h", "0d"} and self.at(token.text,
                                                                            "PRECEDING"):
            self.i += 2
            return True
        return False

    def frame_bound(self, frame: str) -> int | None:
        if self.accept("UNBOUNDED", "PRECEDING"):
            return None
        if self.accept("CURRENT", "ROW"):
            return 0
        token = self.next()
        if self.at("OPEN"):
            raise self.unsupported("OPEN PRECEDING frame bounds")
        self.expect("PRECEDING")
        if token.kind == "duration":
            if frame == "rows":
                raise self.unsupported("a time duration in a ROWS frame")
            return int(token.text[:-1]) * _DURATION_MS[token.text[-1]]
        if token.kind == "number" and token.text.isdigit():
            return int(token.text)
        raise UnsupportedStatementError(f"bad window frame bound {token.text!r}")

    # expressions, by precedence
    def expr(self) -> Expr:
        left = self.and_expr()
        while self.accept("OR"):
            left = Binary("or", left, self.and_expr())
        return left

    def and_expr(self) -> Expr:
        left = self.not_expr()
        while self.accept("AND"):
            left = Binary("and", left, self.not_expr())
        return left

    def not_expr(self) -> Expr:
        if self.accept("NOT"):
            return Unary("not", self.not_expr())
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.additive()
        token = self.peek()
        if token and token.text in {"=", "==", "!=", "<>", "<", "<=", ">", ">="}:
            self.i += 1
            op = {"==": "=", "<>": "!="}.get(token.text, token.text)
            return Binary(op, left, self.additive())
        if self.accept("IS"):
            negated = self.accept("NOT")
            self.expect("NULL")
            return IsNull(left, negated)
        if self.at("IN") or self.at("LIKE") or self.at("BETWEEN") or self.at("NOT"):
            raise self.unsupported(f"the operator {self.next().upper}")
        return left

    def additive(self) -> Expr:
        left = self.multiplicative()
        while (token := self.peek()) is not None and token.text in {"+", "-"}:
            self.i += 1
            left = Binary(token.text, left, self.multiplicative())
        return left

    def multiplicative(self) -> Expr:
        left = self.unary()
        while (token := self.peek()) is not None and token.text in {"*", "/", "%"}:
            self.i += 1
            left = Binary(token.text, left, self.unary())
        return left

    def unary(self) -> Expr:
        if self.accept("-"):
            operand = self.unary()
            if isinstance(operand, Literal) and isinstance(operand.value, int | float):
                return Literal(-operand.value)
            return Unary("-", operand)
        return self.primary()

    def primary(self) -> Expr:
        token = self.next()
        if token.text == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        if token.text == "?":
            self.placeholders += 1
            return Placeholder(self.placeholders - 1)
        if token.kind == "number":
            text = token.text
            return Literal(float(text) if any(c in text for c in ".eE") else int(text))
        if token.kind == "string":
            return Literal(token.text[1:-1].replace(token.text[0] * 2, token.text[0]))
        if token.kind == "duration":
            raise self.unsupported(f"the interval literal {token.text!r} outside a window frame")
        if token.kind in {"word", "quoted"}:
            word = token.text if token.kind == "word" else token.text[1:-1]
            upper = word.upper() if token.kind == "word" else ""
            if upper in {"NULL", "TRUE", "FALSE"}:
                return Literal({"NULL": None, "TRUE": True, "FALSE": False}[upper])
            if upper == "CAST":
                self.expect("(")
                operand = self.expr()
                self.expect("AS")
                type_name = canonical_type(self.ident())
                self.expect(")")
                return Cast(operand, type_name)
            if upper == "CASE":
                raise self.unsupported("CASE expressions")
            if self.accept("("):
                return self.call(word.lower())
            if self.accept("."):  # table.column
                return ColumnRef(self.ident())
            return ColumnRef(word)
        raise UnsupportedStatementError(f"unexpected {token.text!r} in expression")

    def call(self, name: str) -> Call:
        distinct = self.accept("DISTINCT")
        star = False
        args: list[Expr] = []
        if self.accept("*"):
            star = True
            self.expect(")")
        elif not self.accept(")"):
            args.append(self.expr())
            while self.accept(","):
                args.append(self.expr())
            self.expect(")")
        window = None
        if self.accept("OVER"):
            if self.at("("):
                raise self.unsupported("inline window definitions (use WINDOW w AS (...))")
            window = self.ident()
        return Call(name, tuple(args), window, distinct, star)


def _ttl_minutes(ttl: Any) -> int:
    text = str(ttl).strip()
    units = {"m": 1, "h": 60, "d": 1440}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def parse(sql: str) -> Statement:
    """Parse one statement (a trailing semicolon is allowed)."""
    return _Parser(sql).statement()


def calls_over(window: str, exprs: Sequence[Expr]) -> list[Call]:
    """The aggregate calls `OVER window` in these expressions, each once, in order."""
    found: list[Call] = []

    def visit(node: Expr) -> None:
        match node:
            case Call() if node.window == window:
                if node not in found:
                    found.append(node)
            case Call(args=args):
                for arg in args:
                    visit(arg)
            case Binary(left=left, right=right):
                visit(left)
                visit(right)
            case Unary(operand=operand) | IsNull(operand=operand) | Cast(operand=operand):
                visit(operand)

    for expr in exprs:
        visit(expr)
    return found
