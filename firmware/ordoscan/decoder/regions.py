"""Where to look in a frame: boxes, and the regions that may hold a code the fast pass missed.

Two signs point at a region: QR finder patterns (`ordoscan.decoder.finders`, the code's
own structure) and cheap statistics on a half-size frame (dense edges both ways, about as
much dark as light), which also cover DataMatrix symbols. Overlapping boxes are merged;
boxes that cover most of the frame give the whole frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ordoscan.decoder.finders import Beside, CodeGuess, find_finders, guess_codes, later

Grey = npt.NDArray[np.uint8]

# The region finder (measured on the hard counter scenes and blank counters: it
# finds every code the extra passes rescue, and nothing on most blank frames).
_CELL = 16  # frame pixels a side of one cell of the statistics map
_EDGE_MIN = 5.5  # mean grey-level step per pixel, across and along, over 3x3 cells
# ... where nothing else points at a code (no finder pattern, no region at the floor above,
# no symbol detected): pale print blurred by a disc as wide as its modules steps at 4-5.5,
# well over the noise test; kept where the frame measures the disc (Decoder.decode). On
# af_pale 0-119 every pass due 89 -> 92 of 120, af_miss 99 -> 101, gen2 dev 250 000-250 239,
# 300 000-300 239 and pale as before (tuned on af_pale and af_miss: 4.2, 3.5, 3 tried;
# 2.5 read no more at more cost)
FAINT_EDGE_MIN = 3.0
_EDGE_OVER_FLAT = 2.5  # ... and this many times the frame's flat cells (sensor noise)
_DARK_SHARE = (0.36, 0.72)  # share of pixels below the local mean: codes ~0.5, text ~0.3
MAX_REGIONS = 3  # candidate regions searched per frame, densest first
_MIN_CODE_CELLS = 6  # a smaller patch is a word or a corner, not a code
_MIN_CODE_SIDE = 2  # cells across, both ways: a line of text is one cell high
_MAX_CODE_ASPECT = 3.0  # codes are square (seen slanted: under 2.5 measured); lines of text are not
_MAX_CODE_CELLS = 20  # a larger patch is not one small code: only its densest part is searched
_WHOLE_FRAME = 0.5  # regions covering more of the frame than this: search the whole frame

# Candidates from QR finder patterns (ordoscan.decoder.finders): the code's own structure.
_FINDER_LEVELS = 2  # pyramid levels searched: modules of about 1.2 to 10 frame pixels


@dataclass(frozen=True, slots=True)
class Box:
    """A region of the frame, in pixels (x1, y1 excluded)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def overlaps(self, o: Box) -> bool:
        return self.x0 < o.x1 and o.x0 < self.x1 and self.y0 < o.y1 and o.y0 < self.y1

    def union(self, o: Box) -> Box:
        return Box(min(self.x0, o.x0), min(self.y0, o.y0), max(self.x1, o.x1), max(self.y1, o.y1))


def new_guesses(frame: Grey, known: list[Box], beside: Beside = later) -> list[CodeGuess]:
    """QR Codes the finder patterns point at, away from the `known` boxes (symbols read or
    detected already); `beside`: see finders.find_finders."""
    out = []
    for g in guess_codes(find_finders(frame, _FINDER_LEVELS, beside=beside), frame.shape):
        cx, cy = (g.x0 + g.x1) // 2, (g.y0 + g.y1) // 2
        centre = Box(cx, cy, cx + 1, cy + 1)
        if not any(k.overlaps(centre) for k in known):
            out.append(g)
    return out


def outline(corners: tuple[tuple[int, int], ...]) -> tuple[int, int, int, int]:
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def guess_box(g: CodeGuess) -> Box:
    return Box(g.x0, g.y0, g.x1, g.y1)


def whole(frame: Grey) -> Box:
    return Box(0, 0, frame.shape[1], frame.shape[0])


# Whether the view moved, from one frame to another: the mean of each _CELL-pixel cell,
# from every 4th pixel both ways (a sixteenth of the pixels), and how much the cells changed
# on average (grey levels). On the presentations' dev frames two frames apart: 0.4-2.3
# while a code is held with tremor, 4-35 while it is brought in or moved. Still: the
# search's regions of a frame hold for the next ones (the code keeps within the regions'
# margins); moving: a frame's search is not worth its cost (see ordoscan.decoder).
_VIEW_STEP = 4
_STILL = 2.5
_MOVING = 6.0


def view(frame: Grey) -> npt.NDArray[np.float32]:
    """A coarse look at the frame, to tell whether it moved (see still)."""
    k = _CELL // _VIEW_STEP
    s = frame[::_VIEW_STEP, ::_VIEW_STEP]
    h, w = s.shape[0] // k * k, s.shape[1] // k * k
    cells: npt.NDArray[np.float32] = (
        s[:h, :w].astype(np.float32).reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    )
    return cells


def _change(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """How much two views (see view) differ: the mean change of a cell, in grey levels."""
    return float(np.abs(a - b).mean()) if a.shape == b.shape and a.size else math.inf


def still(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> bool:
    """Whether two views (see view) show the same scene, moved little enough that the
    regions searched on one still hold on the other."""
    return _change(a, b) <= _STILL


def moving(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> bool:
    """Whether the view moved a lot from one frame (view a) to the next (view b)."""
    return _MOVING < _change(a, b) < math.inf


def pad(box: Box, frame: Grey) -> Box:
    """The box with room for a quiet zone and the finder's coarse outline, inside the frame."""
    m = max(_CELL * 2, (box.x1 - box.x0 + box.y1 - box.y0) // 8)
    return Box(
        max(0, box.x0 - m),
        max(0, box.y0 - m),
        min(frame.shape[1], box.x1 + m),
        min(frame.shape[0], box.y1 + m),
    )


def merge_regions(boxes: list[Box], frame: Grey) -> list[Box]:
    """The boxes merged where they overlap, at most MAX_REGIONS in the order given;
    the whole frame if they cover most of it."""
    merged: list[Box] = []
    for b in boxes:
        for i, m in enumerate(merged):
            if m.overlaps(b):
                merged[i] = m.union(b)
                break
        else:
            if len(merged) < MAX_REGIONS:
                merged.append(b)
    changed = True
    while changed:  # a union can reach a box it did not overlap before
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                if merged[i].overlaps(merged[j]):
                    merged[i] = merged[i].union(merged.pop(j))
                    changed = True
                    break
            if changed:
                break
    if sum(b.area for b in merged) > _WHOLE_FRAME * frame.size:
        return [whole(frame)]
    return merged


def _box3(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Mean over each cell's 3x3 neighbourhood (edge cells repeated)."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    out = p[0:h, 0:w].copy()
    for dy in range(3):
        for dx in range(3):
            if dy or dx:
                out += p[dy : dy + h, dx : dx + w]
    return out / 9.0


class EdgeMap(NamedTuple):
    """A frame's grey-level steps per cell (candidate_regions), kept to be searched again."""

    core: npt.NDArray[np.int16]  # 2x2 sums, a whole number of cells
    edges: npt.NDArray[np.float64]  # mean step per pixel, across and along (the lesser), 3x3
    flat: float  # the frame's flattest cells' steps (sensor noise)


def edge_map(frame: Grey) -> EdgeMap | None:
    """The frame's steps per cell (None: a frame too small for three cells a side)."""
    h2, w2 = frame.shape[0] // 2, frame.shape[1] // 2
    c = _CELL // 2
    ch, cw = (h2 - 1) // c, (w2 - 1) // c
    if ch < 3 or cw < 3:
        return None
    # 2x2 sums: a quarter of the pixels to visit, and half the sensor noise
    rows = frame[0 : 2 * h2 : 2].astype(np.int16)
    rows += frame[1 : 2 * h2 : 2]
    half = rows[:, 0 : 2 * w2 : 2] + rows[:, 1 : 2 * w2 : 2]
    core = half[: ch * c, : cw * c]
    step = half[: ch * c, 1 : cw * c + 1] - core
    np.abs(step, out=step)
    across = _cell_sums(step, ch, cw)
    step = half[1 : ch * c + 1, : cw * c] - core
    np.abs(step, out=step)
    along = _cell_sums(step, ch, cw)
    per_pixel = 1.0 / (4 * c * c)  # 2x2 sums: grey levels times 4
    flat = max(float(np.percentile(np.minimum(across, along), 10)) * per_pixel, 0.5)
    edges = np.minimum(_box3(across), _box3(along)) * per_pixel
    return EdgeMap(core, edges, flat)


def _cell_sums(a: npt.NDArray[np.int16], ch: int, cw: int) -> npt.NDArray[np.float64]:
    c = _CELL // 2
    per_row = a.reshape(ch, c, cw * c).sum(axis=1, dtype=np.int32)
    sums: npt.NDArray[np.float64] = per_row.reshape(ch, cw, c).sum(axis=2, dtype=np.float64)
    return sums


def candidate_regions(frame: Grey, edge_min: float = _EDGE_MIN, emap: EdgeMap | None = None
                      ) -> tuple[list[Box], Box | None]:
    """Regions that look like a 2-D code, densest first (cheap statistics, no decoding),
    and the box of the cells with strong steps both ways (padded as a region is; None: a
    blank view).

    A QR Code or DataMatrix is a patch with strong grey-level steps both
    across and along, well above the sensor noise, with about as many dark
    as light pixels. Counters, hands, gradients, noise and wood grain fail the
    first tests; printed text is mostly light, so it fails the last. `edge_min`: the
    steps' floor (FAINT_EDGE_MIN where nothing else points at a code); `emap`: the
    frame's edge_map, when already taken.
    """
    emap = emap if emap is not None else edge_map(frame)
    if emap is None:
        return [], None
    core, edges, flat = emap
    c = _CELL // 2
    ch, cw = edges.shape
    strong = (edges >= edge_min) & (edges >= _EDGE_OVER_FLAT * flat)
    if not strong.any():
        return [], None
    ys, xs = np.nonzero(strong)
    busy = pad(Box(int(xs.min()) * _CELL, int(ys.min()) * _CELL, (int(xs.max()) + 1) * _CELL,
                   (int(ys.max()) + 1) * _CELL), frame)
    # share of dark pixels, only near the strong cells: text is the common look-alike
    near = _box3(strong.astype(np.float64)) > 0
    ys, xs = np.nonzero(near)
    local_mean = _box3(_cell_sums(core, ch, cw)) / (c * c)
    blocks = core.reshape(ch, c, cw, c)[ys, :, xs, :]
    dark = np.zeros((ch, cw))
    dark[ys, xs] = (blocks < local_mean[ys, xs][:, None, None]).mean(axis=(1, 2))
    dark = _box3(dark)
    mask = strong & (dark >= _DARK_SHARE[0]) & (dark <= _DARK_SHARE[1])
    found = []
    for y0, x0, y1, x1, (py, px), cells in _components(mask, edges):
        h, w = y1 - y0 + 1, x1 - x0 + 1
        if cells < _MIN_CODE_CELLS or min(h, w) < _MIN_CODE_SIDE:
            continue
        if max(h, w) > _MAX_CODE_ASPECT * min(h, w):
            continue
        # a large patch (a page of text, a code filling the view) is not a small code the
        # fast pass missed: search a code's size around its densest cell
        half_side = _MAX_CODE_CELLS // 2
        if y1 - y0 >= _MAX_CODE_CELLS:
            y0, y1 = max(y0, py - half_side), min(y1, py + half_side - 1)
        if x1 - x0 >= _MAX_CODE_CELLS:
            x0, x1 = max(x0, px - half_side), min(x1, px + half_side - 1)
        score = float((edges[y0 : y1 + 1, x0 : x1 + 1] * mask[y0 : y1 + 1, x0 : x1 + 1]).sum())
        patch = Box(x0 * _CELL, y0 * _CELL, (x1 + 1) * _CELL, (y1 + 1) * _CELL)
        found.append((score, pad(patch, frame)))
    found.sort(key=lambda f: -f[0])
    return [b for _, b in found[:MAX_REGIONS]], busy


def _components(
    mask: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]
) -> list[tuple[int, int, int, int, tuple[int, int], int]]:
    """8-connected groups of cells: (y0, x0, y1, x1, highest-scoring cell, cell count) each."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    out = []
    for y, x in zip(*(a.tolist() for a in np.nonzero(mask)), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        todo = [(y, x)]
        y0, y1, x0, x1, peak, count = y, y, x, x, (y, x), 0
        while todo:
            cy, cx = todo.pop()
            count += 1
            if score[cy, cx] > score[peak]:
                peak = (cy, cx)
            y0, y1, x0, x1 = min(y0, cy), max(y1, cy), min(x0, cx), max(x1, cx)
            for ny in range(max(cy - 1, 0), min(cy + 2, h)):
                for nx in range(max(cx - 1, 0), min(cx + 2, w)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        todo.append((ny, nx))
        out.append((y0, x0, y1, x1, peak, count))
    return out
