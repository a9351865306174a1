"""Compound identity by structure: RDKit canonical SMILES of the largest fragment, non-isomeric.

Two files rarely spell a drug the same way (salts, stereo marks, aromatic vs Kekulé forms),
so compounds are matched on a structure key, never on SMILES text.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache

from deeppert.errors import DeeppertError

try:
    from rdkit import Chem, RDLogger
    from rdkit.Chem.MolStandardize import rdMolStandardize
    from rdkit.Chem.Scaffolds import MurckoScaffold
except ImportError as exc:  # an optional dependency: the downstream tasks need it
    raise DeeppertError(
        "matching compounds by structure needs RDKit: pip install 'deeppert[chem]'"
    ) from exc

__all__ = [
    "UnmatchedWarning",
    "structure_key",
    "structure_keys",
    "murcko_scaffold",
    "warn_unmatched",
]

log = logging.getLogger(__name__)


class UnmatchedWarning(UserWarning):
    """Some compounds (SMILES or drug names) matched nothing on the other side."""


@cache
def _chooser() -> rdMolStandardize.LargestFragmentChooser:
    return rdMolStandardize.LargestFragmentChooser()


@lru_cache(maxsize=65536)
def structure_key(smiles: str) -> str | None:
    """Canonical non-isomeric SMILES of the largest fragment of ``smiles``; None if unparsable.

    Salts and counter-ions are dropped (largest fragment), stereo marks are ignored, so
    e.g. ``"...N.Cl.Cl"`` and the free base share one key.
    """
    RDLogger.DisableLog("rdApp.*")  # parse errors are reported by the caller, info chatter is noise
    try:
        mol = Chem.MolFromSmiles(str(smiles))
        if mol is None:
            return None
        mol = _chooser().choose(mol)
        return Chem.MolToSmiles(mol, isomericSmiles=False)
    finally:
        RDLogger.EnableLog("rdApp.*")


def structure_keys(smiles: Iterable[str], *, source: str) -> list[str | None]:
    """:func:`structure_key` of each SMILES; unparsable ones become None and are warned about.

    Parameters
    ----------
    smiles
        SMILES strings, in order.
    source
        File and column the SMILES came from, named in the warning.
    """
    smiles = [str(s) for s in smiles]
    keys = [structure_key(s) for s in smiles]
    bad = [s for s, k in zip(smiles, keys, strict=True) if k is None]
    if bad:
        warn_unmatched(bad, what="unparsable SMILES", source=source)
    return keys


def murcko_scaffold(key: str) -> str:
    """Plain Bemis-Murcko scaffold SMILES of a structure key (``""`` for acyclic molecules).

    Ring systems and linkers keep their atom types and bond orders (not the generic,
    all-carbon single-bond framework), so pyridine and benzene rings are different scaffolds.
    """
    mol = Chem.MolFromSmiles(key)
    if mol is None:
        raise DeeppertError(f"murcko_scaffold: cannot parse structure key {key!r}")
    return Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(mol), isomericSmiles=False)


def warn_unmatched(items: Sequence[str], *, what: str, source: str, limit: int = 20) -> None:
    """Warn (and log) that ``items`` matched nothing, with counts; never drop them silently."""
    if not len(items):
        return
    counts = Counter(str(i) for i in items)
    shown = ", ".join(
        f"{k!r} (x{n})" if n > 1 else repr(k) for k, n in list(counts.items())[:limit]
    )
    more = f", ... {len(counts) - limit} more" if len(counts) > limit else ""
    msg = f"{source}: {len(items)} {what} ({len(counts)} distinct) matched nothing and are left out: {shown}{more}"
    log.warning(msg)
    warnings.warn(msg, UnmatchedWarning, stacklevel=3)
