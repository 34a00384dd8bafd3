"""Who is who: a mean face embedding per clip, person ids within a source, and identities
across sources.

    vec = clip_embedding(track, positions, embed, minimum=3)      # one clip's face
    labels = person_labels(faces, max_distance=0.55)               # one source's clips
    labels = connected_identities(vectors, max_distance=0.6, same=[(i, j), ...])

The embedding is dlib's 128-d face descriptor (`curation.faces.FaceEmbedder`: two faces of
one person are closer than 0.6, euclidean). A clip's embedding is the mean of the
descriptors of its sampled faces, most of them computed anyway by the tracker's identity
checks (`curation.tracks`); a mean of several faces is steadier than any one of them.

Within a source, clips are grouped into persons by average-linkage agglomerative clustering
of their mean embeddings with two constraints a video gives for free: the pieces of one
track are one person, and two tracks on screen at the same frames are two people.

Across sources (`stc split`), identities are the connected components of the graph linking
two persons closer than `max_distance` (single linkage). Chaining can merge two people into
one identity, never split one person into two: for a split that must not leak a person from
training into evaluation, merging too much is the safe error. The graph is built block by
block, so memory stays O(n * block) for any number of persons.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from stc.curation.tracks import Track

EMBEDDING_SIZE = 128


def clip_embedding(track: Track, positions: Sequence[int],
                   embed: Callable[[int], "np.ndarray | None"], minimum: int) -> np.ndarray | None:
    """The mean descriptor of a clip's faces: the detections `positions` of `track` (indices
    into its frames) that the tracker embedded, topped up to `minimum` with evenly spread
    others through `embed(position)`. None when no face could be embedded."""
    if not positions:
        return None
    have = [track.embeddings[track.frames[i]] for i in positions if track.frames[i] in track.embeddings]
    if len(have) < minimum:
        done = {i for i in positions if track.frames[i] in track.embeddings}
        todo = [i for i in positions if i not in done]
        want = min(len(todo), minimum - len(have))
        for k in np.linspace(0, len(todo) - 1, want).round().astype(int) if want else []:
            vec = embed(todo[k])
            if vec is not None:
                vec = np.asarray(vec, np.float64)
                track.embeddings[track.frames[todo[k]]] = vec
                have.append(vec)
    return np.mean(have, axis=0) if have else None


@dataclass(frozen=True)
class ClipFace:
    """What person clustering needs of one clip of a source."""

    embedding: np.ndarray
    track: tuple[int, int]          # (shot_index, track_index): pieces of one track are one person
    start: int                      # source frames [start, end)
    end: int


def _distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.maximum(sq, 0.0))


def person_labels(faces: Sequence[ClipFace], max_distance: float) -> list[int]:
    """Person label of every clip of one source, 0, 1, ... in order of first appearance.

    Average linkage: two groups merge while the mean distance between their clips is at
    most `max_distance` and no clip of one shares frames with a clip of the other on
    another track. Lance-Williams updates keep it O(n^2) memory, O(n^3) worst-case time
    with numpy over the n clips of one source."""
    n = len(faces)
    if n == 0:
        return []
    # Must-link: the pieces of one track start as one group.
    group_of: dict[tuple[int, int], int] = {}
    member = [group_of.setdefault(f.track, len(group_of)) for f in faces]
    k = len(group_of)
    x = np.stack([f.embedding for f in faces]).astype(np.float64)
    d = _distances(x, x)
    size = np.bincount(member, minlength=k).astype(np.float64)
    onehot = np.zeros((k, n))
    onehot[member, np.arange(n)] = 1.0
    # Mean pairwise distance between groups (average linkage), and cannot-link between them.
    dist = onehot @ d @ onehot.T / np.outer(size, size)
    start = np.array([f.start for f in faces])
    end = np.array([f.end for f in faces])
    same_shot = np.array([[a.track[0] == b.track[0] for b in faces] for a in faces])
    overlap = (start[:, None] < end[None, :]) & (start[None, :] < end[:, None]) & same_shot
    cannot = (onehot @ overlap.astype(np.float64) @ onehot.T) > 0
    alive = np.ones(k, bool)
    label = np.arange(k)
    while True:
        masked = np.where(cannot | ~alive[:, None] | ~alive[None, :] | np.eye(k, dtype=bool),
                          np.inf, dist)
        i, j = np.unravel_index(np.argmin(masked), masked.shape)
        if not masked[i, j] <= max_distance:
            break
        i, j = min(i, j), max(i, j)
        dist[i, :] = dist[:, i] = (size[i] * dist[i, :] + size[j] * dist[j, :]) / (size[i] + size[j])
        cannot[i, :] = cannot[:, i] = cannot[i, :] | cannot[j, :]
        size[i] += size[j]
        alive[j] = False
        label[label == j] = i
    groups = label[member]
    first: dict[int, int] = {}
    for g, f in sorted(zip(groups, faces), key=lambda gf: (gf[1].start, gf[1].track)):
        first.setdefault(int(g), len(first))
    return [first[int(g)] for g in groups]


def person_id(source_id: str, label: int) -> str:
    """The id of person `label` of a source: unique over sources, stable across its shots."""
    return f"{source_id}_p{label:02d}"


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def connected_identities(vectors: np.ndarray, max_distance: float,
                         same: Iterable[tuple[int, int]] = (), block: int = 2048) -> list[int]:
    """Component label (the smallest member index) of every vector: linked when closer
    than `max_distance`, or named together in `same`."""
    n = len(vectors)
    uf = UnionFind(n)
    for i, j in same:
        uf.union(i, j)
    x = np.asarray(vectors, np.float64)
    for a in range(0, n, block):
        d = _distances(x[a:a + block], x[a:])
        rows, cols = np.nonzero(d <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if a + r < a + c:
                uf.union(a + r, a + c)
    return [uf.find(i) for i in range(n)]


# --- across sources: identities, splits, duplicates (`stc split`) ---------------------------
SPLITS = ("train", "val", "test")


def stable_rank(key: str, seed: int) -> str:
    """A key's place in the seed's order: the same for a seed whatever else is present."""
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).hexdigest()


def identity_name(members: Iterable[str]) -> str:
    """The id of an identity: from its smallest person_id, so it does not depend on order."""
    return "id" + hashlib.blake2b(min(members).encode(), digest_size=5).hexdigest()


def assign_splits(sizes: Mapping[str, int], val: float, test: float, seed: int) -> dict[str, str]:
    """identity -> train / val / test, each identity whole in one split. Identities are
    taken in the seed's order; one joins test while test stays within `test` of all frames,
    else val likewise, else train. A split asked for but left empty (every identity larger
    than its share) gets the smallest identity train can spare."""
    total = float(sum(sizes.values()))
    want = {"test": test * total, "val": val * total}
    fill = {"test": 0.0, "val": 0.0}
    out: dict[str, str] = {}
    for ident in sorted(sizes, key=lambda i: stable_rank(i, seed)):
        n = sizes[ident]
        for split in ("test", "val"):
            if fill[split] + n <= want[split]:
                out[ident], fill[split] = split, fill[split] + n
                break
        else:
            out[ident] = "train"
    for split, fraction in (("test", test), ("val", val)):
        train = [i for i in out if out[i] == "train"]
        if fraction > 0 and split not in out.values() and len(train) > 1:
            out[min(train, key=lambda i: (sizes[i], stable_rank(i, seed)))] = split
    return out


@dataclass(frozen=True)
class KeptClip:
    """What the cross-source steps need of a kept clip."""

    clip_id: str
    source_id: str
    source_hash: str | None
    person: str                     # person_id
    start: int
    end: int
    embedding: np.ndarray


def identities(clips: Sequence[KeptClip], max_distance: float) -> list[str]:
    """identity id of every clip: its person (a source's cluster) linked to persons of other
    sources whose mean embeddings are within `max_distance` (`connected_identities`)."""
    persons = sorted({c.person for c in clips})
    at = {p: i for i, p in enumerate(persons)}
    sums = np.zeros((len(persons), EMBEDDING_SIZE))
    counts = np.zeros(len(persons))
    for c in clips:
        sums[at[c.person]] += c.embedding
        counts[at[c.person]] += 1
    labels = connected_identities(sums / counts[:, None], max_distance)
    members: dict[int, list[str]] = {}
    for p, label in zip(persons, labels):
        members.setdefault(label, []).append(p)
    name = {label: identity_name(m) for label, m in members.items()}
    return [name[labels[at[c.person]]] for c in clips]


def near_duplicates(clips: Sequence[KeptClip], identity: Sequence[str],
                    copies: Mapping[str, Sequence[str]]) -> list[dict]:
    """Clips a training set should not hold twice, each group with why:

    - `same_bytes`: the source was given more than once (its `duplicate_paths`, `copies`:
      source_id -> the other paths), or two sources have one content hash;
    - `overlapping_frames`: two clips of one identity share frames of one source (or of two
      byte-identical sources)."""
    out: list[dict] = []
    by_source: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_source.setdefault(c.source_id, []).append(i)
    for source, others in sorted(copies.items()):
        if others and source in by_source:
            out.append({"kind": "same_bytes", "source_id": source, "copies": list(others),
                        "clips": [clips[i].clip_id for i in by_source[source]]})
    by_content: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_content.setdefault(c.source_hash or c.source_id, []).append(i)
    for content, rows in sorted(by_content.items()):
        sources = sorted({clips[i].source_id for i in rows})
        if len(sources) > 1:
            out.append({"kind": "same_bytes", "source_hash": content, "sources": sources,
                        "clips": [clips[i].clip_id for i in rows]})
        rows = sorted(rows, key=lambda i: clips[i].start)
        for k, i in enumerate(rows):
            for j in rows[k + 1:]:
                a, b = clips[i], clips[j]
                if b.start >= a.end:
                    break
                if identity[i] == identity[j]:
                    out.append({"kind": "overlapping_frames", "identity_id": identity[i],
                                "clips": [a.clip_id, b.clip_id],
                                "frames": [b.start, min(a.end, b.end)]})
    return out
