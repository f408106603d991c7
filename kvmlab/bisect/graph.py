"""The commit graph of a bisection range, as plain data with ancestor bitsets.

A range is every commit reachable from the tip but not from the boundary
(``git rev-list tip ^boundary``). Commits are numbered in topological order
(parents before children); ``closure[i]`` is a Python int whose bit ``j`` is
set when commit ``j`` is commit ``i`` or one of its ancestors inside the range.
A commit is *changed* (contains the culprit) iff the culprit's bit is set in
its closure; this holds with merges, no linear order is assumed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RangeCommit:
    """One commit of the range: full hash, parents (full hashes), subject."""

    hash: str
    parents: tuple[str, ...]
    subject: str = ""


@dataclass(frozen=True)
class CommitGraph:
    """Commits between a boundary and a tip, numbered parents-first."""

    commits: tuple[RangeCommit, ...]
    tip: str
    """The newest commit of the range (the bad commit of a cause bisection)."""
    boundary: tuple[str, ...]
    """The commits the range starts after (excluded, with their ancestors)."""
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    closure: tuple[int, ...] = field(init=False, repr=False, compare=False)
    parent_index: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)
    """Per commit: indices of its in-range parents (empty for the range's roots)."""
    chains: tuple[tuple[int, int, int], ...] = field(init=False, repr=False, compare=False)
    """The range cut into runs ``(start, stop, base)`` of consecutive indices where
    each commit after ``start`` has exactly one in-range parent, the one before
    it; ``base`` is the in-range parent of ``start`` (-1 for none). A commit with
    two or more in-range parents is a run of its own with ``base`` -2."""
    chain_of: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """Per commit: the index of its run in :attr:`chains`."""

    def __post_init__(self) -> None:
        index = {c.hash: i for i, c in enumerate(self.commits)}
        closure: list[int] = []
        parent_index: list[tuple[int, ...]] = []
        for i, c in enumerate(self.commits):
            bits = 1 << i
            mine = []
            for p in c.parents:
                j = index.get(p)
                if j is not None:
                    if j >= i:
                        raise ValueError(f"commit {c.hash} listed before its parent {p}")
                    bits |= closure[j]
                    mine.append(j)
            closure.append(bits)
            parent_index.append(tuple(mine))
        if self.commits and self.tip not in index:
            raise ValueError(f"tip {self.tip} is not in the range")
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "closure", tuple(closure))
        object.__setattr__(self, "parent_index", tuple(parent_index))
        chains: list[tuple[int, int, int]] = []
        for i, ps in enumerate(parent_index):
            if len(ps) >= 2:
                chains.append((i, i + 1, -2))
            elif chains and ps == (i - 1,) and chains[-1][2] != -2 and chains[-1][1] == i:
                start, _, base = chains[-1]
                chains[-1] = (start, i + 1, base)
            else:
                chains.append((i, i + 1, ps[0] if ps else -1))
        object.__setattr__(self, "chains", tuple(chains))
        chain_of = tuple(k for k, (a, b, _) in enumerate(chains) for _ in range(a, b))
        object.__setattr__(self, "chain_of", chain_of)

    @classmethod
    def from_parents(
        cls,
        rows: Sequence[tuple[str, Sequence[str], str]],
        *,
        tip: str,
        boundary: Sequence[str],
    ) -> CommitGraph:
        """Build from ``(hash, parents, subject)`` rows in any order; sorts them
        topologically (parents first, ties by input order)."""
        by_hash = {h: (tuple(ps), s) for h, ps, s in rows}
        order: list[str] = []
        state: dict[str, int] = {}
        for start, _, _ in rows:
            if start in state:
                continue
            stack: list[tuple[str, int]] = [(start, 0)]
            while stack:
                h, k = stack.pop()
                parents = by_hash[h][0]
                if k == 0:
                    if state.get(h) == 2:
                        continue
                    state[h] = 1
                while k < len(parents) and (parents[k] not in by_hash or state.get(parents[k]) == 2):
                    k += 1
                if k < len(parents):
                    stack.append((h, k + 1))
                    if state.get(parents[k]) == 1:
                        raise ValueError(f"cycle through commit {parents[k]}")
                    stack.append((parents[k], 0))
                    continue
                state[h] = 2
                order.append(h)
        commits = tuple(RangeCommit(h, by_hash[h][0], by_hash[h][1]) for h in order)
        return cls(commits=commits, tip=tip, boundary=tuple(boundary))

    def __len__(self) -> int:
        return len(self.commits)

    @property
    def all_mask(self) -> int:
        return (1 << len(self.commits)) - 1

    def closure_of(self, commit: str) -> int:
        """Ancestor bitset of ``commit``; 0 for a commit outside the range
        (a boundary commit or one of its ancestors: it contains no candidate)."""
        i = self.index.get(commit)
        return 0 if i is None else self.closure[i]

    def members(self, bits: int) -> list[str]:
        """Hashes of the commits whose bits are set, parents first."""
        out = []
        while bits:
            low = bits & -bits
            out.append(self.commits[low.bit_length() - 1].hash)
            bits ^= low
        return out

    def is_merge(self, commit: str) -> bool:
        i = self.index.get(commit)
        return i is not None and len(self.commits[i].parents) > 1

    def subject(self, commit: str) -> str:
        i = self.index.get(commit)
        return "" if i is None else self.commits[i].subject


def fold(g: CommitGraph, keep: Collection[str]) -> CommitGraph:
    """``g`` with only the commits of ``keep`` (the tip always stays): each one
    dropped is folded into its parents, i.e. a kept commit's parents become
    the nearest kept commits (or out-of-range parents) behind the dropped
    ones. Ancestry between kept commits is unchanged, so a commit contains the
    culprit in the folded graph iff it does in ``g`` when the culprit is kept."""
    kept = set(keep) | {g.tip}
    # Per commit: what it stands for as a parent, parents first.
    stands: list[tuple[str, ...]] = []
    rows: list[RangeCommit] = []
    for c in g.commits:
        parents: list[str] = []
        for p in c.parents:
            j = g.index.get(p)
            for q in ((p,) if j is None else stands[j]):
                if q not in parents:
                    parents.append(q)
        if c.hash in kept:
            rows.append(RangeCommit(c.hash, tuple(parents), c.subject))
            stands.append((c.hash,))
        else:
            stands.append(tuple(parents))
    return CommitGraph(commits=tuple(rows), tip=g.tip, boundary=g.boundary)
