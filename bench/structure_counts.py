"""How the tracking URI travels: counts that `docs/architecture.md`'s tracking section rests on.

    python bench/structure_counts.py

Prints, from the source tree (AST, no imports):
- public module-level functions of ``deeppert/tracking/*.py`` and how many take a tracking URI
  string as first argument (a parameter named ``uri`` / ``tracking_uri``; ``server.py``'s
  database URIs are not tracking URIs and are left out);
- calls of ``tracking_client(...)`` in production code (``deeppert/``, ``ray_jobs/``);
- connect-prologue sites: production functions outside ``deeppert/tracking/client.py`` and
  ``session.py`` that call ``get_or_create_experiment``, or ``check_server`` without a
  ``timeout=`` (the quick liveness probes, ``timeout=3.0``, are counted apart), and the
  sites that connect a ``TrackingSession`` instead (``TrackingSession(...).connect()``).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URI_NAMES = {"uri", "tracking_uri"}


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_connect(call: ast.Call) -> bool:
    name = _called_name(call)
    if name == "get_or_create_experiment":
        return True
    return name == "check_server" and not any(k.arg == "timeout" for k in call.keywords)


def _is_session_connect(call: ast.Call) -> bool:
    """``TrackingSession(...).connect(...)`` or ``TrackingSession.for_uri(...).connect(...)``."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "connect"):
        return False
    made = func.value
    return isinstance(made, ast.Call) and "TrackingSession" in ast.unparse(made.func)


def _public_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            out.append(node)
    return out


def _first_param(func: ast.FunctionDef) -> str | None:
    names = [a.arg for a in func.args.posonlyargs + func.args.args if a.arg not in ("self", "cls")]
    return names[0] if names else None


def counts() -> dict:
    public, uri_first = 0, []
    for path in sorted((ROOT / "deeppert" / "tracking").glob("*.py")):
        for func in _public_functions(ast.parse(path.read_text())):
            public += 1
            if path.stem != "server" and _first_param(func) in URI_NAMES:
                uri_first.append(f"{path.stem}.{func.name}")
    client_calls, prologue, probes, connects = 0, [], [], []
    files = sorted((ROOT / "deeppert").rglob("*.py")) + sorted((ROOT / "ray_jobs").glob("*.py"))
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called_name(node) == "tracking_client":
                client_calls += 1
        if rel in ("deeppert/tracking/client.py", "deeppert/tracking/session.py"):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)]
            if any(isinstance(c, ast.FunctionDef) and c is not node for c in ast.walk(node)):
                continue  # counted at the innermost function
            site = f"{rel}:{node.name}"
            if any(_is_session_connect(c) for c in calls):
                connects.append(site)
            if any(_is_connect(c) for c in calls):
                prologue.append(site)
            elif any(_called_name(c) == "check_server" for c in calls):
                probes.append(site)
    return {
        "public_tracking_functions": public,
        "taking_a_uri_first": len(uri_first),
        "uri_first": uri_first,
        "tracking_client_calls": client_calls,
        "prologue_sites": len(prologue),
        "prologue": prologue,
        "probe_sites": len(probes),
        "probes": probes,
        "session_connect_sites": len(connects),
        "session_connects": connects,
    }


if __name__ == "__main__":
    print(json.dumps(counts(), indent=1))
