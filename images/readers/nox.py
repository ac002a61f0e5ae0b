"""``noxfile.py``: what test sessions ``session.install``."""

from __future__ import annotations

import ast

from images.readers.collector import Collector, Found, parse_python
from images.readers.common import EXCLUDED_WORDS, name_words
from images.readers.installers import pip_arguments


def read(c: Collector) -> None:
    """``session.install("a", "-r", "f")`` calls with literal arguments, outside docs/lint sessions."""
    tree = parse_python(c, "noxfile.py")
    if tree is None:
        return
    declined = []
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if name_words(function.name) & EXCLUDED_WORDS:
            declined.append(function.name)
            continue
        found = Found()
        for node in ast.walk(function):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "install"
                and isinstance(node.func.value, ast.Name)
            ):
                continue
            tokens = []
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    tokens.append(arg.value)
                else:
                    found.skipped.append(f"{ast.unparse(arg)} (not a literal)")
            pip_arguments(tokens, found)
        if found.packages or found.requirement_files or found.extras or found.skipped:
            c.apply(found, f"noxfile.py {function.name}() session.install")
    if declined:
        c.note(f"noxfile.py sessions {', '.join(declined)} not read (not test-related)")
