"""What the mutation operators read of a function, from the module's AST: every definition with its
qualname, a function's own nodes (nested definitions left out, lambda and comprehension variables
marked), the names it binds and reads, and its statement blocks."""

from __future__ import annotations

import ast
from collections.abc import Iterator

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def definitions(tree: ast.Module) -> list[tuple[str, FunctionNode]]:
    """``(qualname, node)`` for every function definition, each before those nested in it."""
    found: list[tuple[str, FunctionNode]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((prefix + child.name, child))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

Scoped = list[tuple[ast.AST, frozenset[str]]]
"""A function's own nodes, each with the names a lambda or comprehension around it rebinds."""


def own_nodes(func: FunctionNode) -> Scoped:
    """The nodes of ``func``'s body, without nested function definitions.

    Nested functions are targets of their own. Variable annotations are skipped: in a function body they
    are never evaluated, so mutating them is no bug.
    """
    found: Scoped = []

    def visit(node: ast.AST, shadowed: frozenset[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return
        found.append((node, shadowed))
        if isinstance(node, ast.Lambda):
            visit(node.args, shadowed)
            visit(node.body, shadowed | {arg.arg for arg in _parameters(node.args)})
        elif isinstance(node, _COMPREHENSIONS):
            inner = shadowed | {
                name.id
                for gen in node.generators
                for name in ast.walk(gen.target)
                if isinstance(name, ast.Name)
            }
            outermost = node.generators[0].iter  # the only part evaluated in the enclosing scope
            for child in ast.iter_child_nodes(node):
                parts = ast.iter_child_nodes(child) if isinstance(child, ast.comprehension) else [child]
                for part in parts:
                    visit(part, shadowed if part is outermost else inner)
        elif isinstance(node, ast.AnnAssign):
            visit(node.target, shadowed)
            if node.value is not None:
                visit(node.value, shadowed)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child, shadowed)

    for statement in func.body:
        visit(statement, frozenset())
    return found


def _parameters(args: ast.arguments) -> list[ast.arg]:
    """All parameters in source order."""
    star = [args.vararg] if args.vararg else []
    double_star = [args.kwarg] if args.kwarg else []
    return [*args.posonlyargs, *args.args, *star, *args.kwonlyargs, *double_star]


def local_names(func: FunctionNode, nodes: Scoped) -> set[str]:
    """Names bound in ``func`` itself: parameters, assignment targets, ``except ... as`` names.

    Names declared ``global``/``nonlocal`` are not local; comprehension and lambda variables belong to
    their own scopes (a walrus inside a comprehension binds in the function, and counts).
    """
    names = {arg.arg for arg in _parameters(func.args)}
    declared: set[str] = set()
    for node, shadowed in nodes:
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and node.id not in shadowed:
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            declared.update(node.names)
    return names - declared


def variable_reads(nodes: Scoped) -> list[ast.Name]:
    """Reads of the function's own variables (and of globals), not of lambda or comprehension variables."""
    return [
        node
        for node, shadowed in nodes
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in shadowed
    ]


def blocks(func: FunctionNode, nodes: Scoped) -> Iterator[tuple[ast.AST, list[ast.stmt]]]:
    """Every statement list in ``func`` (bodies, ``else``/``finally``, handlers, cases) with its owner."""
    for owner in [func, *(node for node, _ in nodes)]:
        for field in ("body", "orelse", "finalbody"):
            block = getattr(owner, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield owner, block


def has_docstring(owner: ast.AST) -> bool:
    return (
        isinstance(owner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and isinstance(owner.body[0], ast.Expr)
        and isinstance(owner.body[0].value, ast.Constant)
        and isinstance(owner.body[0].value.value, str)
    )


def is_noop(statement: ast.stmt) -> bool:
    """``pass``, ``...`` or a bare string: removing it changes no behaviour."""
    return isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
    )
