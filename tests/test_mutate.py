"""Mutation operators over source text: exact mutants, untouched surroundings, filtering, patches.

Sources are small but realistic (decorators, classes, nested functions, comments, docstrings, non-ASCII
text, multi-line and parenthesised expressions). Patches are checked with the real ``git apply``.
"""

from __future__ import annotations

import ast
import difflib
import random
import subprocess
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from envs import mutate_edits, mutate_operators
from envs.mutate import OPERATORS, FunctionSpan, Mutant, functions, mutants, unified_diff


def code(text: str) -> str:
    """An indented triple-quoted block as module text."""
    return textwrap.dedent(text).lstrip("\n")


def run(source: str, operator: str, target: str | None = None) -> list[Mutant]:
    """Every mutant one operator makes of ``source`` (``per_function`` high enough to take them all)."""
    targets = None if target is None else {target}
    return mutants(
        "pkg/shop.py",
        source,
        targets=targets,
        operators=[operator],
        rng=random.Random(0),
        per_function=100,
    )


def texts(source: str, operator: str, target: str | None = None) -> set[str]:
    return {mutant.mutated for mutant in run(source, operator, target)}


def changed_lines(before: str, after: str) -> set[int]:
    """1-based lines of ``before`` that ``after`` replaces or deletes, or that an insertion precedes."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    lines: set[int] = set()
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag != "equal":
            lines.update(range(i1 + 1, max(i2, i1 + 1) + 1))
    return lines


SHOP = code(
    '''
    """Prices for the café — ünïcode everywhere."""

    import math
    import os, re
    from decimal import (
        Decimal,
        ROUND_HALF_UP,
    )

    TAX = 0.2  # default rate


    def cache(fn):
        return fn


    @cache
    def price(amount, rate=TAX, *, currency="€"):
        """Gross price of ``amount``."""
        label = f"{amount} {currency}"  # «shown» to users
        gross = amount * (1 + rate)
        if gross < 0 or not label:
            raise ValueError("négatif")
        return Decimal(gross).quantize(Decimal("0.01"), ROUND_HALF_UP)


    class Basket:
        def __init__(self, items):
            self.items = list(items)

        def total(self, discount=0):
            subtotal = sum(
                item.price  # per unit
                * item.count
                for item in self.items
            )
            return math.floor(subtotal - discount)

        async def fetch(self, url):
            import json

            def parse(text, strict):
                return json.loads(text) if strict else text

            return json.dumps(parse(os.path.join(url, "é"), True))
    '''
)


# --- functions() -----------------------------------------------------------------------------------


def test_functions_lists_every_definition_with_its_span() -> None:
    assert functions(SHOP) == [
        FunctionSpan("cache", 13, 14, 14),
        FunctionSpan("price", 18, 24, 19),
        FunctionSpan("Basket.__init__", 28, 29, 29),
        FunctionSpan("Basket.total", 31, 37, 32),
        FunctionSpan("Basket.fetch", 39, 45, 40),
        FunctionSpan("Basket.fetch.parse", 42, 43, 43),
    ]


def test_functions_spans_for_decorated_one_line_and_nested_classes() -> None:
    source = code(
        """
        def outer():
            class Local:
                @property
                @staticmethod
                def value(): return 1
            async def helper(): ...
            return Local
        """
    )
    assert functions(source) == [
        FunctionSpan("outer", 1, 7, 2),
        FunctionSpan("outer.Local.value", 5, 5, 5),
        FunctionSpan("outer.helper", 6, 6, 6),
    ]


def test_functions_of_unparsable_source_is_empty() -> None:
    assert functions("def broken(:\n    pass\n") == []
    assert mutants("x.py", "def broken(:\n    pass\n", rng=random.Random(0)) == []


# --- functions family ------------------------------------------------------------------------------


def test_function_body_removed_keeps_the_docstring() -> None:
    [mutant] = run(SHOP, "function_body_removed", "price")
    body = (
        '    label = f"{amount} {currency}"  # «shown» to users\n'
        "    gross = amount * (1 + rate)\n"
        "    if gross < 0 or not label:\n"
        '        raise ValueError("négatif")\n'
        '    return Decimal(gross).quantize(Decimal("0.01"), ROUND_HALF_UP)\n'
    )
    assert body in SHOP
    assert mutant.mutated == SHOP.replace(body, "")
    assert (mutant.family, mutant.function, mutant.line) == ("functions", "price", 20)
    assert mutant.description == "body after the docstring removed"


def test_function_body_removed_without_docstring_becomes_pass() -> None:
    [mutant] = run(SHOP, "function_body_removed", "Basket.total")
    assert mutant.mutated == SHOP.replace(
        """        subtotal = sum(
            item.price  # per unit
            * item.count
            for item in self.items
        )
        return math.floor(subtotal - discount)
""",
        "        pass\n",
    )
    assert mutant.line == 32


def test_function_body_removed_on_the_def_line_and_stubs() -> None:
    source = "def one(): return 1  # why\n\n\ndef stub():\n    ...\n"
    assert texts(source, "function_body_removed") == {"def one(): pass  # why\n\n\ndef stub():\n    ...\n"}


def test_statements_removed_candidates_and_exact_text() -> None:
    source = code(
        """
        def handle(event, log):
            '''Docstring: never removed.'''
            kind = event["kind"]  # ☃
            if kind == "stop":
                log.append("stopping")
                return False

            @log.register
            def later():
                return kind
            return True
        """
    )
    found = run(source, "statements_removed")
    assert sorted(mutant.description for mutant in found) == sorted(
        [
            "statement at line 3 removed",
            "2 statements at lines 3-6 removed",
            "3 statements at lines 3-10 removed",
            "statement at lines 4-6 removed",
            "2 statements at lines 4-10 removed",
            "3 statements at lines 4-11 removed",
            "statement at lines 8-10 removed",
            "2 statements at lines 8-11 removed",
            "statement at line 11 removed",
            "statement at line 5 removed",
            "2 statements at lines 5-6 removed",
            "statement at line 6 removed",
        ]
    )
    by_description = {mutant.description: mutant.mutated for mutant in found}
    # A block emptied entirely gets `pass` at its indentation; comments elsewhere stay.
    assert by_description["2 statements at lines 5-6 removed"] == source.replace(
        '        log.append("stopping")\n        return False\n', "        pass\n"
    )
    # A decorated definition goes with its decorator, never leaving it on the next statement.
    assert by_description["statement at lines 8-10 removed"] == source.replace(
        "    @log.register\n    def later():\n        return kind\n", ""
    )
    assert all("Docstring: never removed." in mutant.mutated for mutant in found)


def test_statements_removed_leaves_semicolon_lines_alone_but_not_whole_one_line_blocks() -> None:
    source = "def f(x):\n    if x: a = 1; b = 2\n    return x\n"
    assert texts(source, "statements_removed") == {
        "def f(x):\n    return x\n",
        "def f(x):\n    if x: a = 1; b = 2\n",
        "def f(x):\n    pass\n",
        "def f(x):\n    if x: pass\n    return x\n",
    }


# --- arguments family ------------------------------------------------------------------------------


def test_parameter_removed_single_line_signature() -> None:
    found = run(SHOP, "parameter_removed", "price")
    signatures = {mutant.mutated.splitlines()[17] for mutant in found}
    assert signatures == {
        'def price(rate=TAX, *, currency="€"):',
        'def price(amount, *, currency="€"):',
        "def price(amount, rate=TAX):",  # the lone keyword-only parameter takes its `*` along
    }
    assert all(mutant.line == 18 for mutant in found)
    assert {mutant.description for mutant in found} == {
        "parameter `amount` removed",
        "parameter `rate=TAX` removed",
        'parameter `currency="€"` removed',
    }


def test_parameter_removed_keeps_markers_valid_and_never_removes_self() -> None:
    source = code(
        """
        class Shelf:
            def place(self, item, /, slot, *rest, level: int = 0, **options):
                return item, slot, rest, level, options
        """
    )
    signatures = {text.splitlines()[1].strip() for text in texts(source, "parameter_removed")}
    assert signatures == {
        "def place(self, /, slot, *rest, level: int = 0, **options):",
        "def place(self, item, /, *rest, level: int = 0, **options):",
        "def place(self, item, /, slot, *, level: int = 0, **options):",  # still keyword-only
        "def place(self, item, /, slot, *rest, **options):",
        "def place(self, item, /, slot, *rest, level: int = 0):",
    }
    lone = "def f(a, /, *, b):\n    return a, b\n"
    assert texts(lone, "parameter_removed") == {
        "def f(*, b):\n    return a, b\n",
        "def f(a, /):\n    return a, b\n",
    }


def test_parameter_removed_multi_line_signature_keeps_comments() -> None:
    source = code(
        """
        def scale(
            value,  # the input
            factor: float = 2.0,  # multiplier
        ):
            return value * factor
        """
    )
    assert texts(source, "parameter_removed") == {
        "def scale(\n    factor: float = 2.0,  # multiplier\n):\n    return value * factor\n",
        "def scale(\n    value,  # the input\n):\n    return value * factor\n",
    }
    no_trailing_comma = (
        "def scale(\n    value,  # the input\n    factor  # multiplier\n):\n    return value\n"
    )
    assert "def scale(\n    value  # the input\n):\n    return value\n" in texts(
        no_trailing_comma, "parameter_removed"
    )


def test_call_arguments_swapped() -> None:
    line = 'return json.dumps(parse(os.path.join(url, "é"), True))'
    found = run(SHOP, "call_arguments_swapped", "Basket.fetch")
    assert {mutant.mutated for mutant in found} == {
        SHOP.replace(line, 'return json.dumps(parse(os.path.join("é", url), True))'),
        SHOP.replace(line, 'return json.dumps(parse(True, os.path.join(url, "é")))'),
    }
    assert {(mutant.line, mutant.family) for mutant in found} == {(45, "arguments")}
    assert 'arguments `url` and `"é"` of the call at line 45 swapped' in {m.description for m in found}


def test_call_arguments_swapped_multi_line_and_skips() -> None:
    source = code(
        """
        def report(rows, title):
            emit(
                title,  # heading
                render(rows),
                *rows,
            )
            emit(max(1, 0x1), max(rows, rows))
        """
    )
    assert texts(source, "call_arguments_swapped") == {
        source.replace(
            "        title,  # heading\n        render(rows),",
            "        render(rows),  # heading\n        title,",
        ),
        # `max(1, 0x1)` swaps texts but not the AST, `max(rows, rows)` not even texts, `*rows` is no
        # positional argument to swap; the outer call's arguments are the two calls.
        source.replace("emit(max(1, 0x1), max(rows, rows))", "emit(max(rows, rows), max(1, 0x1))"),
    }


# --- variables family ------------------------------------------------------------------------------


def test_variables_swapped_swaps_reads_only() -> None:
    source = code(
        """
        LIMIT = 10

        def window(self, start, size):
            global hits
            end = start + size  # exclusive
            squares = [end * end for end in range(size)]
            ranked = sorted(squares, key=lambda size: -size)
            hits = len(ranked)
            return self.data[start:end], min(end, LIMIT)
        """
    )
    found = run(source, "variables_swapped")
    # `self` is out, `hits` is global, LIMIT/len/min are no locals; the `end` of the comprehension and the
    # `size` of the lambda are theirs, not the function's.
    assert {mutant.description for mutant in found} == {
        "reads of `end` and `ranked` swapped (3 in all)",
        "reads of `end` and `size` swapped (4 in all)",
        "reads of `end` and `squares` swapped (3 in all)",
        "reads of `end` and `start` swapped (4 in all)",
        "reads of `ranked` and `size` swapped (3 in all)",
        "reads of `ranked` and `squares` swapped (2 in all)",
        "reads of `ranked` and `start` swapped (3 in all)",
        "reads of `size` and `squares` swapped (3 in all)",
        "reads of `size` and `start` swapped (4 in all)",
        "reads of `squares` and `start` swapped (3 in all)",
    }
    [start_size] = [mutant for mutant in found if "`size` and `start`" in mutant.description]
    assert start_size.mutated == source.replace(
        "    end = start + size  # exclusive\n    squares = [end * end for end in range(size)]",
        "    end = size + start  # exclusive\n    squares = [end * end for end in range(start)]",
    ).replace("self.data[start:end]", "self.data[size:end]")
    assert start_size.line == 5


def test_variables_swapped_counts_exception_names_as_locals() -> None:
    source = code(
        """
        def load(path, default):
            try:
                return open(path).read()
            except OSError as error:
                return default or error
        """
    )
    assert {mutant.description for mutant in run(source, "variables_swapped")} == {
        "reads of `default` and `error` swapped (2 in all)",
        "reads of `default` and `path` swapped (2 in all)",
        "reads of `error` and `path` swapped (2 in all)",
    }


def test_variables_swapped_respects_comprehension_scopes() -> None:
    # A comprehension's first iterable is evaluated outside it: that `rows` is the function's; the
    # `rows` it then binds, and the `rows` the inner loop reads, are the comprehension's.
    source = code(
        """
        def flatten(rows, width):
            rows = [row[:width] for row in rows]
            return [cell for rows in rows for cell in rows]
        """
    )
    assert texts(source, "variables_swapped") == {
        code(
            """
            def flatten(rows, width):
                rows = [row[:rows] for row in width]
                return [cell for rows in width for cell in rows]
            """
        )
    }


# --- statements family -----------------------------------------------------------------------------


def test_import_removed_module_level_and_local() -> None:
    found = run(SHOP, "import_removed")
    by_function = Counter(mutant.function for mutant in found)
    assert by_function == Counter({"price": 2, "Basket.total": 1, "Basket.fetch": 2, "Basket.fetch.parse": 0})
    descriptions = {(mutant.function, mutant.description, mutant.line) for mutant in found}
    assert descriptions == {
        ("price", "`Decimal` removed from the import at line 5", 6),
        ("price", "`ROUND_HALF_UP` removed from the import at line 5", 7),
        ("Basket.total", "`import math` at line 3 removed", 3),
        ("Basket.fetch", "`os` removed from the import at line 4", 4),
        ("Basket.fetch", "`import json` at line 40 removed", 40),
    }
    texts_by = {mutant.description: mutant.mutated for mutant in found}
    assert texts_by["`os` removed from the import at line 4"] == SHOP.replace(
        "import os, re\n", "import re\n"
    )
    assert texts_by["`ROUND_HALF_UP` removed from the import at line 5"] == SHOP.replace(
        "    Decimal,\n    ROUND_HALF_UP,\n", "    Decimal,\n"
    )
    assert texts_by["`import json` at line 40 removed"] == SHOP.replace("        import json\n", "")


def test_import_removed_skips_unused_shadowed_and_redundant_imports() -> None:
    source = code(
        """
        from __future__ import annotations
        import re
        import sys

        def clean(text, re):
            return re.sub(" +", " ", text)

        def split(text):
            import re
            return re.split(",", text)
        """
    )
    assert run(source, "import_removed") == []


def test_return_value_removed() -> None:
    source = code(
        """
        def area(w, h):
            if w < 0:
                return None
            return (w *  # width
                    h)  # and height
        """
    )
    [mutant] = run(source, "return_value_removed")  # `return None` -> `return` would be no bug
    assert mutant.mutated == "def area(w, h):\n    if w < 0:\n        return None\n    return  # and height\n"
    assert (mutant.line, mutant.family) == (4, "statements")


# --- operators family ------------------------------------------------------------------------------


def test_binary_operator_replaced_with_non_ascii_and_parentheses() -> None:
    source = code(
        """
        def mix(a, b, flags):
            note = "ünïcode → " + str(a)  # «comment»
            ratio = (a
                     # why
                     ) / (b)
            flags <<= 2
            limit: int | None = None  # a local annotation is never evaluated: no bug to make there
            return a ** 2 % b, flags & 1, note
        """
    )
    result = texts(source, "binary_operator_replaced")
    assert result == {
        source.replace('"ünïcode → " + str(a)', '"ünïcode → " - str(a)'),
        source.replace(") / (b)", ") * (b)"),
        source.replace(") / (b)", ") // (b)"),
        source.replace("flags <<= 2", "flags >>= 2"),
        source.replace("a ** 2 % b", "a * 2 % b"),
        source.replace("a ** 2 % b", "a ** 2 // b"),
        source.replace("flags & 1", "flags | 1"),
    }
    [mutant] = [
        m for m in run(source, "binary_operator_replaced") if m.description.endswith("`//` at line 5")
    ]
    assert (mutant.description, mutant.line) == ("`/` replaced by `//` at line 5", 5)


def test_unary_operator_removed() -> None:
    source = "def f(x, mask):\n    if not (x or mask): return-x\n    return ~mask, x[-1]\n"
    assert texts(source, "unary_operator_removed") == {
        "def f(x, mask):\n    if (x or mask): return-x\n    return ~mask, x[-1]\n",
        "def f(x, mask):\n    if not (x or mask): return x\n    return ~mask, x[-1]\n",
        "def f(x, mask):\n    if not (x or mask): return-x\n    return mask, x[-1]\n",
        "def f(x, mask):\n    if not (x or mask): return-x\n    return ~mask, x[1]\n",
    }


def test_boolean_operator_replaced_each_operator_separately() -> None:
    source = "def ok(a, b, c):\n    return (a and  # both\n            b) or c\n"
    assert texts(source, "boolean_operator_replaced") == {
        "def ok(a, b, c):\n    return (a or  # both\n            b) or c\n",
        "def ok(a, b, c):\n    return (a and  # both\n            b) and c\n",
    }


def test_comparison_operator_replaced() -> None:
    source = code(
        """
        def check(i, n, seen, key):
            assert 0 <= i < n, "hors limites é"
            return key not in seen and seen is not None and key in ("é",) and i == n
        """
    )
    line = 'assert 0 <= i < n, "hors limites é"'
    ret = 'return key not in seen and seen is not None and key in ("é",) and i == n'
    assert texts(source, "comparison_operator_replaced") == {
        source.replace(line, line.replace("0 <= i", "0 < i")),
        source.replace(line, line.replace("i < n", "i <= n")),
        source.replace(ret, ret.replace("key not in seen", "key in seen")),
        source.replace(ret, ret.replace("is not None", "is None")),
        source.replace(ret, ret.replace('key in ("é",)', 'key not in ("é",)')),
        source.replace(ret, ret.replace("i == n", "i != n")),
    }




def test_comparison_operator_replaced_greater_unequal_and_identity() -> None:
    # The operators the test above does not hold: a swapped row of the replacement table fails here.
    source = "def f(a, b, c):\n    return a > b and b >= c and a != c and a is b\n"
    ret = "return a > b and b >= c and a != c and a is b"
    assert texts(source, "comparison_operator_replaced") == {
        source.replace(ret, ret.replace("a > b", "a >= b")),
        source.replace(ret, ret.replace("b >= c", "b > c")),
        source.replace(ret, ret.replace("a != c", "a == c")),
        source.replace(ret, ret.replace("a is b", "a is not b")),
    }
# --- mutants(): selection, filtering, scope ------------------------------------------------------------


def test_operators_are_named_by_family_in_a_stable_order() -> None:
    assert dict(OPERATORS) == {
        "function_body_removed": "functions",
        "statements_removed": "functions",
        "parameter_removed": "arguments",
        "call_arguments_swapped": "arguments",
        "variables_swapped": "variables",
        "import_removed": "statements",
        "return_value_removed": "statements",
        "binary_operator_replaced": "operators",
        "unary_operator_removed": "operators",
        "boolean_operator_replaced": "operators",
        "comparison_operator_replaced": "operators",
    }


def test_every_mutant_changes_only_its_function_and_compiles() -> None:
    spans = {span.qualname: span for span in functions(SHOP)}
    imports = {
        line
        for node in ast.parse(SHOP).body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for line in range(node.lineno, node.end_lineno + 1)
    }
    found = mutants("pkg/shop.py", SHOP, rng=random.Random(3), per_function=100)
    assert {mutant.operator for mutant in found} == set(OPERATORS)
    baseline = ast.dump(ast.parse(SHOP))
    for mutant in found:
        span = spans[mutant.function]
        inside = set(range(span.start, span.end + 1))
        if mutant.operator == "import_removed":
            inside |= imports
        lines = changed_lines(SHOP, mutant.mutated)
        assert lines and lines <= inside, mutant.description
        assert mutant.line == min(lines), mutant.description
        assert mutant.family == OPERATORS[mutant.operator] and mutant.original == SHOP
        assert mutant.path == "pkg/shop.py"
        compile(mutant.mutated, mutant.path, "exec")
        assert ast.dump(ast.parse(mutant.mutated)) != baseline
    assert len({mutant.mutated for mutant in found}) == len(found)


def test_targets_restrict_to_named_functions() -> None:
    found = mutants("pkg/shop.py", SHOP, targets={"Basket.fetch.parse"}, rng=random.Random(0))
    assert found and {mutant.function for mutant in found} == {"Basket.fetch.parse"}
    assert all(changed_lines(SHOP, mutant.mutated) <= {42, 43} for mutant in found)
    assert mutants("pkg/shop.py", SHOP, targets=["no.such"], rng=random.Random(0)) == []


def test_per_function_limit_and_seeded_determinism() -> None:
    def pick(seed: int) -> list[tuple[str, str, str]]:
        found = mutants("pkg/shop.py", SHOP, rng=random.Random(seed), per_function=2)
        return [(m.function, m.operator, m.mutated) for m in found]

    assert pick(11) == pick(11)
    assert len({tuple(pick(seed)) for seed in range(6)}) > 1
    counts = Counter((function, operator) for function, operator, _ in pick(11))
    assert max(counts.values()) == 2
    # Order: by function in source order, then operator in OPERATORS order.
    order = [(function, list(OPERATORS).index(operator)) for function, operator, _ in pick(11)]
    functions_order = [span.qualname for span in functions(SHOP)]
    assert order == sorted(order, key=lambda item: (functions_order.index(item[0]), item[1]))


def test_identical_results_are_kept_once() -> None:
    # Removing either of two identical statements gives the same text: kept once. Removing both gives
    # `pass`, which function_body_removed already produced.
    source = "def twice(log):\n    log.append(1)\n    log.append(1)\n"
    found = mutants(
        "a.py", source, operators=["function_body_removed", "statements_removed"], rng=random.Random(0)
    )
    assert [(m.operator, m.mutated) for m in found] == [
        ("function_body_removed", "def twice(log):\n    pass\n"),
        ("statements_removed", "def twice(log):\n    log.append(1)\n"),
    ]


def test_results_that_do_not_compile_are_dropped() -> None:
    # Removing `total = 0` leaves `nonlocal total` without a binding: a compile-time SyntaxError.
    source = code(
        """
        def counter():
            total = 0
            def add(n):
                nonlocal total
                total += n
            return add
        """
    )
    add = "    def add(n):\n        nonlocal total\n        total += n\n"
    assert texts(source, "statements_removed", "counter") == {
        "def counter():\n    return add\n",
        "def counter():\n    pass\n",
        "def counter():\n    total = 0\n    return add\n",
        "def counter():\n    total = 0\n",
        "def counter():\n    total = 0\n" + add,
    }


def test_candidates_failing_the_filters_do_not_use_up_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    source = "def f(x):\n    return x\n"
    statement = (source.index("return"), len(source) - 1)  # `return x`

    def generate(src: object, func: object) -> list[mutate_edits.Candidate]:
        return [
            mutate_edits.Candidate(((*statement, replacement),), description)
            for replacement, description in [
                ("return (x", "does not parse"),
                ("return  x", "formatting only"),
                ("return x", "the original"),
                ("return -x", "a bug"),
                ("return -x", "the same bug"),
            ]
        ]

    monkeypatch.setitem(mutate_operators.GENERATORS, "return_value_removed", generate)
    for seed in range(8):
        for quota in (1, 2):
            found = mutants(
                "a.py",
                source,
                operators=["return_value_removed"],
                rng=random.Random(seed),
                per_function=quota,
            )
            assert [mutant.mutated for mutant in found] == ["def f(x):\n    return -x\n"]


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="no_such_operator"):
        mutants("a.py", "def f(): pass\n", operators=["no_such_operator"], rng=random.Random(0))
    with pytest.raises(TypeError):
        mutants("a.py", "def f(): pass\n", targets="f", rng=random.Random(0))


def test_crlf_source_keeps_its_line_endings() -> None:
    source = "def f(a, b):\r\n    c = a - b  # é\r\n    return c\r\n"
    assert texts(source, "binary_operator_replaced") == {source.replace("a - b", "a + b")}
    assert "def f(a, b):\r\n    c = a - b  # é\r\n" in texts(source, "statements_removed")


# --- unified_diff ----------------------------------------------------------------------------------


def git(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[bytes]:
    # Bytes in, so that the patch reaches git exactly as unified_diff wrote it (CRLF, UTF-8).
    return subprocess.run(["git", *args], cwd=cwd, input=stdin.encode(), capture_output=True, check=False)


def apply_and_reverse(tmp_path: Path, path: str, before: str, after: str) -> None:
    """``unified_diff`` applies with ``git apply``, yielding ``after``, and reverses back to ``before``."""
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    assert git(repo, "init", "-q").returncode == 0
    file = repo / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(before.encode())
    patch = unified_diff(path, before, after)
    applied = git(repo, "apply", "-", stdin=patch)
    assert applied.returncode == 0, applied.stderr.decode() + patch
    assert file.read_bytes() == after.encode()
    reversed_ = git(repo, "apply", "-R", "-", stdin=patch)
    assert reversed_.returncode == 0, reversed_.stderr.decode() + patch
    assert file.read_bytes() == before.encode()


def test_unified_diff_exact_text() -> None:
    before = "a\nb\nc\n"
    after = "a\nB\nc\n"
    assert unified_diff("pkg/x.py", before, after) == (
        "diff --git a/pkg/x.py b/pkg/x.py\n--- a/pkg/x.py\n+++ b/pkg/x.py\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
    )
    assert unified_diff("pkg/x.py", before, before) == ""


def test_unified_diff_marks_a_missing_final_newline() -> None:
    assert unified_diff("x.py", "a\nb", "a\nc") == (
        "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n a\n-b\n"
        "\\ No newline at end of file\n+c\n\\ No newline at end of file\n"
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("x = 1\ny = 2", "x = 1\ny = 3"),  # the changed last line has no newline
        ("x = 1\ny = 2", "x = 1\ny = 2\n"),  # a newline added at the end
        ("x = 1\ny = 2\n", "x = 1\ny = 2"),  # ... and removed
        ("a = 'é'\r\nb = 1\r\n", "a = 'é'\r\nb = 2\r\n"),  # CRLF and non-ASCII
    ],
)
def test_unified_diff_applies_and_reverses(tmp_path: Path, before: str, after: str) -> None:
    apply_and_reverse(tmp_path, "pkg/mod.py", before, after)


def test_every_mutant_patch_applies_and_reverses(tmp_path: Path) -> None:
    no_final_newline = SHOP.rstrip("\n")
    for source in (SHOP, no_final_newline):
        for mutant in mutants("pkg/shop.py", source, rng=random.Random(5), per_function=1):
            apply_and_reverse(tmp_path, mutant.path, mutant.original, mutant.mutated)
