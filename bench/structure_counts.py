"""Structure counts that `docs/architecture.md` rests on: how the tracking URI travels, where
config knobs are declared, and what `--help` of each command loads.

    python bench/structure_counts.py                    # tracking counts of this tree
    python bench/structure_counts.py --schema [--root TREE] [--repeat 3]

Prints, from the source tree (AST, no imports):
- public module-level functions of ``deeppert/tracking/*.py`` and how many take a tracking URI
  string as first argument (a parameter named ``uri`` / ``tracking_uri``; ``server.py``'s
  database URIs are not tracking URIs and are left out);
- calls of ``tracking_client(...)`` in production code (``deeppert/``, ``ray_jobs/``);
- connect-prologue sites: production functions outside ``deeppert/tracking/client.py`` and
  ``session.py`` that call ``get_or_create_experiment``, or ``check_server`` without a
  ``timeout=`` (the quick liveness probes, ``timeout=3.0``, are counted apart), and the
  sites that connect a ``TrackingSession`` instead (``TrackingSession(...).connect()``).

With ``--schema``, for the tree at ``--root`` (default: this one):
- flags written by hand in the front ends (``deeppert/cli/*.py``, ``ray_jobs/*.py``): every
  ``add_argument`` call, and those that declare a knob's value set there (a ``default`` other
  than None/False/an environment lookup, or ``choices``);
- lists of choices written out in a config ``__post_init__`` (a tuple/list/set of two or more
  string literals that a value is tested ``in``, or held in a dict, in a ``__post_init__`` of
  a ``*Config`` dataclass);
- for ``deeppert <command> --help`` (every command and sub-command) and ``python
  ray_jobs/<job>.py --help`` (every job), in a fresh interpreter with ``-X importtime``: the
  modules imported, whether numpy / pandas / torch / mlflow are among them, and the wall time
  (median of ``--repeat`` runs); and the same for ``import deeppert.config``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import time
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


def _knob_default(call: ast.Call) -> bool:
    """Whether an ``add_argument`` call declares a value set: ``choices``, or a default other
    than None/False/an environment lookup."""
    for k in call.keywords:
        if k.arg == "choices":
            return True
        if k.arg == "default":
            v = k.value
            if isinstance(v, ast.Constant) and v.value in (None, False):
                continue
            if "environ" in ast.unparse(v):
                continue
            return True
    return False


def _str_list(node: ast.AST) -> bool:
    """A tuple / list / set of two or more string literals (a list of choices)."""
    elts = getattr(node, "elts", None)
    return (
        isinstance(node, (ast.Tuple, ast.List, ast.Set))
        and len(elts) >= 2
        and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts)
    )


def schema_counts(root: Path) -> dict:
    """Hand-written flags of the front ends and choice lists repeated in ``__post_init__``."""
    flags, knob_flags, by_file = 0, [], {}
    front = sorted((root / "deeppert" / "cli").glob("*.py")) + sorted(
        (root / "ray_jobs").glob("*.py")
    )
    for path in front:
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _called_name(node) == "add_argument":
                flags += 1
                by_file[rel] = by_file.get(rel, 0) + 1
                if _knob_default(node):
                    name = next((a.value for a in node.args if isinstance(a, ast.Constant)), "?")
                    knob_flags.append(f"{rel}:{name}")
    repeated = []
    for path in sorted((root / "deeppert").rglob("*.py")):
        for cls in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(cls, ast.ClassDef) and cls.name.endswith("Config")):
                continue
            for fn in cls.body:
                if not (isinstance(fn, ast.FunctionDef) and fn.name == "__post_init__"):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.Compare) and isinstance(
                        node.ops[0], (ast.In, ast.NotIn)
                    ):
                        lists = node.comparators
                    elif isinstance(node, ast.Dict):
                        lists = node.values
                    else:
                        continue
                    where = f"{path.relative_to(root).as_posix()}:{cls.name}"
                    repeated += [where for x in lists if _str_list(x)]
    return {
        "hand_written_flags": flags,
        "hand_written_flags_by_file": by_file,
        "flags_declaring_a_value_set_by_hand": len(knob_flags),
        "value_set_flags": knob_flags,
        "choice_lists_in_post_init": len(repeated),
        "choice_lists": repeated,
    }


HEAVY = ("numpy", "pandas", "torch", "mlflow", "ray")


def _commands(root: Path) -> list[list[str]]:
    """``argv`` of every ``--help`` measured: each deeppert command and sub-command, each job."""
    code = (
        "import argparse, json\n"
        "from deeppert.cli import COMMANDS, build_parser\n"
        "out = []\n"
        "for name in COMMANDS:\n"
        "    out.append([name])\n"
        "    sub = next(a for a in build_parser([name])._actions if isinstance(a, argparse._SubParsersAction))\n"
        "    for action in sub.choices[name]._actions:\n"
        "        if isinstance(action, argparse._SubParsersAction):\n"
        "            out += [[name, child] for child in action.choices]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    argvs = [["-m", "deeppert", *c, "--help"] for c in json.loads(proc.stdout)]
    jobs = sorted(p.name for p in (root / "ray_jobs").glob("*.py") if not p.name.startswith("_"))
    argvs += [[f"ray_jobs/{job}", "--help"] for job in jobs]
    return argvs + [["-c", "import deeppert.config"]]


def _measure(root: Path, argv: list[str], repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    walls, modules = [], set()
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=root, env=env,
                              capture_output=True, text=True)  # fmt: skip
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv}: exit {proc.returncode}: {proc.stderr[-500:]}")
        modules = {
            line.rsplit("|", 1)[1].strip()
            for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "|" in line and "imported package" not in line
        }
    return {
        "modules": len(modules),
        "heavy": sorted(m for m in HEAVY if m in modules),
        "wall_s": round(statistics.median(walls), 3),
    }


def help_imports(root: Path, repeat: int) -> dict:
    """``--help`` of every command and job (and ``import deeppert.config``): what it loads."""
    out = {}
    for argv in _commands(root):
        label = " ".join(a for a in argv if a not in ("-m", "-c", "--help"))
        out[label] = _measure(root, argv, repeat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", action="store_true", help="knob and --help counts")
    parser.add_argument("--root", type=Path, default=ROOT, help="source tree to count")
    parser.add_argument("--repeat", type=int, default=3, help="runs per --help timing")
    args = parser.parse_args()
    if not args.schema:
        print(json.dumps(counts(), indent=1))
        return
    root = args.root.resolve()
    report = {
        "load_1min": round(os.getloadavg()[0], 2),
        **schema_counts(root),
        "help": help_imports(root, args.repeat),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
