"""Near-duplicate filtering on trajectories made to be near-duplicates, and on distinct ones."""

from __future__ import annotations

import random

import pytest

from core.errors import ForagerError
from forager.dedup import NearDuplicateFilter, normalize_actions, shingles


def _bash(command: str) -> dict:
    return {"tool": "bash", "arguments": {"command": command}}


def _trajectory(seed: int, length: int = 24) -> list[dict]:
    """A plausible trajectory: reading, searching, editing and testing files named by ``seed``."""
    rng = random.Random(seed)
    files = [f"src/pkg{seed}/mod_{rng.randrange(1000)}.py" for _ in range(5)]
    actions: list[dict] = []
    for _ in range(length):
        path = rng.choice(files)
        kind = rng.randrange(4)
        if kind == 0:
            actions.append(_bash(f"sed -n {rng.randrange(400)},{rng.randrange(400, 800)}p {path}"))
        elif kind == 1:
            actions.append(_bash(f"grep -rn 'def func_{rng.randrange(10_000)}' src/pkg{seed}"))
        elif kind == 2:
            old = f"value_{rng.randrange(10_000)} < limit_{rng.randrange(100)}"
            actions.append(
                {
                    "tool": "edit",
                    "arguments": {"path": path, "old_str": old, "new_str": old.replace("<", "<=")},
                }
            )
        else:
            actions.append(_bash(f"python -m pytest tests/test_{rng.randrange(50)}.py -x -q -k case_{seed}"))
    return [*actions, {"tool": "submit", "arguments": {}}]


def _near_copy(actions: list[dict], seed: int) -> list[dict]:
    """``actions`` resampled: the same steps with one in twelve changed and spacing that differs."""
    rng = random.Random(seed)
    copy = []
    for action in actions:
        if action["tool"] == "bash" and rng.random() < 1 / 12:
            copy.append(_bash(f"cat {rng.randrange(10_000)}.log"))
        elif action["tool"] == "bash":
            copy.append(_bash("  " + action["arguments"]["command"].replace(" ", "   ") + "\n"))
        else:
            copy.append(action)
    return copy


def test_normalized_actions_keep_paths_and_numbers_and_collapse_whitespace():
    tokens = normalize_actions(
        [
            _bash("sed  -n 10,20p\tsrc/a.py\n"),
            {"tool": "edit", "arguments": {"path": "src/a.py", "old_str": "x  <  1", "new_str": "x <= 1"}},
            "raw   text of a malformed turn",
        ]
    )
    assert tokens == [
        "<bash>", "command=", "sed", "-n", "10,20p", "src/a.py",
        "<edit>", "new_str=", "x", "<=", "1", "old_str=", "x", "<", "1", "path=", "src/a.py",
        "<raw>", "raw", "text", "of", "a", "malformed", "turn",
    ]  # fmt: skip
    assert normalize_actions([_bash("ls   -la")]) == normalize_actions([_bash(" ls -la\n")])
    assert shingles(["a", "b", "c"], 2) == {"a b", "b c"}
    assert shingles(["a"], 5) == {"a"}


def test_near_duplicates_of_a_task_are_dropped_and_distinct_trajectories_kept():
    dedup = NearDuplicateFilter()
    originals = [_trajectory(seed) for seed in range(20)]
    kept = [dedup.keep("task-1", "acme/calc", actions) for actions in originals]
    assert all(kept), "distinct trajectories of one task are all kept"
    copies = [_near_copy(actions, seed) for seed, actions in enumerate(originals)]
    assert not any(dedup.keep("task-1", "acme/calc", actions) for actions in copies)
    # The same actions for another task are not duplicates: only trajectories of one task are compared.
    assert all(dedup.keep("task-2", "acme/calc", actions) for actions in copies)
    assert dedup.report.to_json()["per_repository"] == {"acme/calc": {"kept": 40, "dropped": 20}}
    assert (dedup.report.kept, dedup.report.dropped) == (40, 20)


def test_the_threshold_is_applied_to_the_minhash_estimate_of_the_jaccard_similarity():
    base = _trajectory(7, length=40)
    other = base[:14] + _trajectory(8, length=26)  # about a fifth of the shingles shared
    first, second = (shingles(normalize_actions(a), 5) for a in (base, other))
    exact = len(first & second) / len(first | second)
    estimate = NearDuplicateFilter().signature(base).jaccard(NearDuplicateFilter().signature(other))
    assert 0.1 < exact < 0.4 and abs(estimate - exact) < 0.1
    # At or above the threshold: dropped; one permutation's worth below: kept.
    at = NearDuplicateFilter(threshold=estimate)
    assert at.keep("t", "r", base) and not at.keep("t", "r", other)
    above = NearDuplicateFilter(threshold=estimate + 1 / 128)
    assert above.keep("t", "r", base) and above.keep("t", "r", other)


def test_same_input_same_decisions_and_another_seed_other_signatures():
    trajectories = [
        _trajectory(seed % 7) if seed % 3 else _near_copy(_trajectory(seed % 7), seed) for seed in range(30)
    ]

    def decisions(seed: int) -> list[bool]:
        dedup = NearDuplicateFilter(seed=seed)
        return [dedup.keep(f"task-{i % 4}", "r", actions) for i, actions in enumerate(trajectories)]

    assert decisions(1) == decisions(1)
    one, two = NearDuplicateFilter(seed=1), NearDuplicateFilter(seed=2)
    assert list(one.signature(trajectories[0]).hashvalues) != list(two.signature(trajectories[0]).hashvalues)


@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_a_threshold_outside_zero_to_one_is_refused(threshold: float):
    with pytest.raises(ForagerError, match="threshold must be in"):
        NearDuplicateFilter(threshold)
