"""Near-duplicate trajectories: MinHash signatures of normalized action sequences, compared per task.

Sampling a task many times yields trajectories that differ in a word of reasoning but take the same
actions; training on all of them over-weights that task. Following CWM, a trajectory is dropped when
its estimated Jaccard similarity to an already kept trajectory *of the same task* is at or above a
threshold (0.5 by default).

- The action sequence is normalized: each action becomes its tool name followed by its arguments
  (in a fixed order), with runs of whitespace collapsed; paths, line numbers and other numbers are
  kept, so editing another line or another file is another action. A malformed action is its raw text.
- Its shingles are the runs of ``shingle_size`` consecutive tokens of that sequence (the whole
  sequence when shorter). Only trajectories of the same task are compared.
- Datasketch's MinHash (seeded: the same input keeps the same trajectories) gives each trajectory a
  signature; the share of equal signature values estimates the Jaccard similarity. A trajectory is
  compared with the kept trajectories of its own task only, all at once (one numpy comparison).

Why no LSH index: locality-sensitive hashing finds candidates among *all* signatures without scanning
them, but here the candidates are already known (the kept trajectories of the same task, a handful to
a few thousand), and the decision must be the issue's: estimated Jaccard similarity at or above the
threshold. Measured with ``python bench/export.py --section dedup_methods`` (synthetic tasks, the same
signatures both ways), the direct comparison decides 18.7k trajectories/s at 8 per task, 10.7k/s at 64
and 4.9k/s at 512, against 0.7k-0.9k/s for datasketch's ``MinHashLSH`` (one index per task, its
candidates checked against the threshold); the two are even at 4096 per task (0.9k/s). The LSH banding
also misses pairs at or above the threshold: it dropped 314 of the 410 near-duplicates the direct
comparison drops at 8 per task (577 of 757 at 64). And an index costs about 8 KiB per kept trajectory
(25 band tables at threshold 0.5) against 512 bytes for the signature alone.

The filter is streaming: trajectories are decided one by one, in the order they come, and it holds
only the signatures of the kept ones (512 bytes each with the default 128 permutations). Fed each
task's trajectories together (``Store.iter_episodes(by_task=True)``, as ``forager export --dedup``
reads them), it can :meth:`~NearDuplicateFilter.forget` a task once it has passed, and its memory is
that of one task; fed interleaved tasks, it grows by 512 bytes per kept trajectory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ForagerError

if TYPE_CHECKING:
    from datasketch import MinHash

_SPACE = re.compile(r"\s+")


def normalize_actions(actions: Sequence[dict[str, Any] | str]) -> list[str]:
    """The tokens of an action sequence: ``<tool>`` then its arguments' words, action after action."""
    tokens: list[str] = []
    for action in actions:
        if isinstance(action, str):
            tokens.append("<raw>")
            tokens.extend(_SPACE.split(action.strip()))
            continue
        tokens.append(f"<{action.get('tool', '?')}>")
        for name, value in sorted((action.get("arguments") or {}).items()):
            tokens.append(f"{name}=")
            tokens.extend(word for word in _SPACE.split(str(value).strip()) if word)
    return tokens


def shingles(tokens: Sequence[str], size: int) -> set[str]:
    """Every run of ``size`` consecutive tokens (joined by a space); the whole sequence when shorter."""
    if len(tokens) <= size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


@dataclass
class DedupCounts:
    kept: int = 0
    dropped: int = 0


@dataclass
class DedupReport:
    """How many trajectories were kept and dropped, per repository."""

    threshold: float
    per_repository: dict[str, DedupCounts] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return sum(c.kept for c in self.per_repository.values())

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.per_repository.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "kept": self.kept,
            "dropped": self.dropped,
            "per_repository": {
                name: {"kept": c.kept, "dropped": c.dropped}
                for name, c in sorted(self.per_repository.items())
            },
        }


class NearDuplicateFilter:
    """Decides, trajectory by trajectory, whether each is a near-duplicate of one already kept."""

    def __init__(
        self, threshold: float = 0.5, *, num_perm: int = 128, shingle_size: int = 5, seed: int = 1
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ForagerError(f"the dedup threshold must be in (0, 1], not {threshold}")
        if shingle_size < 1:
            raise ForagerError(f"the shingle size must be at least 1, not {shingle_size}")
        self.threshold = threshold
        self.shingle_size = shingle_size
        self._num_perm = num_perm
        self._seed = seed
        # Imported here: datasketch's package imports scipy (over a second), which every `forager`
        # command would otherwise pay.
        from datasketch import MinHash

        self._minhash = MinHash
        # The permutations are drawn once from the seed and shared by every signature.
        self._permutations = MinHash(num_perm=num_perm, seed=seed).permutations
        # Per task, the signatures (32-bit hash values) of its kept trajectories, one row each.
        self._kept: dict[str, _Signatures] = {}
        self.report = DedupReport(threshold)

    def signature(self, actions: Sequence[dict[str, Any] | str]) -> MinHash:
        """The MinHash of a trajectory's action shingles."""
        minhash = self._minhash(
            num_perm=self._num_perm, seed=self._seed, permutations=self._permutations, scheme="affine32"
        )
        tokens = normalize_actions(actions)
        minhash.update_batch(
            [s.encode("utf-8", "surrogatepass") for s in shingles(tokens, self.shingle_size)]
        )
        return minhash

    def keep(self, group: str, repository: str, actions: Sequence[dict[str, Any] | str]) -> bool:
        """Whether to keep a trajectory of task ``group`` with these ``actions``: False when it is a
        near-duplicate of one kept before. A kept one is remembered; both are counted per ``repository``."""
        return self.keep_signature(group, repository, self.signature(actions))

    def keep_signature(self, group: str, repository: str, signature: MinHash) -> bool:
        """:meth:`keep` for a trajectory whose :meth:`signature` is already computed."""
        kept = self._kept.setdefault(group, _Signatures(self._num_perm))
        counts = self.report.per_repository.setdefault(repository, DedupCounts())
        if kept.most_similar(signature.hashvalues) >= self.threshold:
            counts.dropped += 1
            return False
        kept.add(signature.hashvalues)
        counts.kept += 1
        return True

    def forget(self, group: str) -> None:
        """Drop what is remembered of task ``group`` (its figures stay): no trajectory of it comes again."""
        self._kept.pop(group, None)


class _Signatures:
    """The signatures of one task's kept trajectories: rows of a matrix that doubles when full."""

    def __init__(self, num_perm: int) -> None:
        self._rows = np.empty((1, num_perm), dtype=np.uint32)
        self._count = 0

    def most_similar(self, values: np.ndarray) -> float:
        """The highest estimated Jaccard similarity of ``values`` to a kept signature (0 when none)."""
        if self._count == 0:
            return 0.0
        equal = np.count_nonzero(self._rows[: self._count] == values, axis=1)
        return float(equal.max()) / self._rows.shape[1]

    def add(self, values: np.ndarray) -> None:
        if self._count == len(self._rows):
            self._rows = np.concatenate([self._rows, np.empty_like(self._rows)])
        self._rows[self._count] = values
        self._count += 1
