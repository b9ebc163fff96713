"""Pictures for the notebooks: matplotlib figures, and the little data the pictures need.

Imported by notebooks only, never by ``import bitnet_lab``; matplotlib itself is imported on the
first drawing call, so :func:`probe_bit_map` and :class:`BitMap` work without it.

Conventions every figure keeps (:func:`check_figure` enforces them; :func:`show` calls it):

- every Axes has a title, an x label and a y label; labels carry units in parentheses where
  the quantity has one ("(bytes)", "(units of γ)", "(%)");
- an Axes with two or more labelled artists has a legend;
- one idea per figure.

:func:`show` is how a notebook displays a figure: inline in Jupyter; without a frontend (a
headless test run, ``MPLBACKEND=Agg``, a plain ``python notebooks/01_….py``) it still renders the
figure — so drawing errors surface — and prints a one-line text description instead. With
``BITNET_LAB_FIGDIR`` set, every shown figure is also saved there as a PNG.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from bitnet_lab.errors import CodecError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from bitnet_lab.formats.gguf import GGUFFile
    from bitnet_lab.tensors import TLTiling

FIGDIR_ENV = "BITNET_LAB_FIGDIR"

# One colour per ternary value, used by every figure that shows codes (−1, 0, +1).
TERNARY_COLOURS = {-1: "#3b6fb6", 0: "#bdbdbd", 1: "#d1495b"}
CODE_TEXT = {-1: "−1", 0: "0", 1: "+1"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


# =============================================================================================
# Showing figures
# =============================================================================================


def _labelled_artists(ax: "Axes") -> list[str]:
    """Labels of the artists a legend would show (matplotlib hides labels starting with '_')."""
    _, labels = ax.get_legend_handles_labels()
    return [lb for lb in labels if lb and not lb.startswith("_")]


def figure_problems(fig: "Figure") -> list[str]:
    """What :func:`check_figure` would complain about, as sentences (empty when all is well)."""
    bad = []
    # colorbars carry their own label; they are not data axes
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and getattr(ax, "_colorbar", None) is None]
    if not axes:
        bad.append("the figure has no axes")
    for i, ax in enumerate(axes):
        where = f"axes {i} ({ax.get_title() or 'untitled'})"
        if not ax.axison:
            continue  # a text panel or a legend holder: no data axes to label
        if not ax.get_title():
            bad.append(f"{where}: no title")
        if not ax.get_xlabel():
            bad.append(f"{where}: no x label")
        if not ax.get_ylabel():
            bad.append(f"{where}: no y label")
        if len(_labelled_artists(ax)) >= 2 and ax.get_legend() is None and not fig.legends:
            bad.append(f"{where}: {len(_labelled_artists(ax))} labelled artists but no legend")
    return bad


def check_figure(fig: "Figure") -> "Figure":
    """Raise ValueError if ``fig`` breaks the module's conventions (titles, labels, legends)."""
    bad = figure_problems(fig)
    if bad:
        raise ValueError("figure does not follow the plotting conventions: " + "; ".join(bad))
    return fig


def describe_figure(fig: "Figure") -> str:
    """One line per Axes: title, axis labels, legend entries — the text form of a figure."""
    sup = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    lines = [f"[figure] {sup}" if sup else "[figure]"]
    for ax in fig.axes:
        if not ax.axison or getattr(ax, "_colorbar", None) is not None:
            continue
        legend = ax.get_legend()
        names = [t.get_text() for t in legend.get_texts()] if legend is not None else []
        s = f"  {ax.get_title()!r}: x = {ax.get_xlabel()!r}, y = {ax.get_ylabel()!r}"
        if names:
            s += f", legend: {', '.join(names)}"
        lines.append(s)
    return "\n".join(lines)


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:80] or "figure"


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and hasattr(ip, "kernel")


def show(fig: "Figure", name: Optional[str] = None) -> None:
    """Check ``fig`` (:func:`check_figure`), save it to ``$BITNET_LAB_FIGDIR`` when set, display
    it (inline backend) or render it and print its description (any non-interactive backend),
    and close it so figures never pile up in memory."""
    plt = _plt()
    import matplotlib

    check_figure(fig)
    figdir = os.environ.get(FIGDIR_ENV)
    if figdir:
        title = name or (fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else "") \
            or next((ax.get_title() for ax in fig.axes if ax.get_title()), "figure")
        Path(figdir).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(figdir) / f"{_slug(title)}.png", dpi=100, bbox_inches="tight")
    backend = matplotlib.get_backend().lower()
    if "inline" in backend and _in_kernel():
        from IPython.display import display

        display(fig)
    elif backend in ("agg", "pdf", "svg", "ps", "cairo", "template") or not _in_kernel():
        fig.canvas.draw()  # render anyway: a bad label or a broken artist fails here, not silently
        print(describe_figure(fig))
    else:  # an interactive backend (ipympl, Qt, …) owns its windows
        plt.show()
        return
    plt.close(fig)


# =============================================================================================
# Notebook 01: ternary weights and int8 activations
# =============================================================================================


def latent_histogram(w: np.ndarray, gamma: float, *, title: str, bins: int = 121) -> "Figure":
    """Histogram of latent weights in units of γ, split by the code absmean gives them.

    Absmean rounds ``w/γ`` to the nearest integer and clips to ±1, so the thresholds sit at
    ±0.5 (±γ/2): inside → 0, beyond → ±1. Each region is drawn in its code's colour."""
    plt = _plt()
    x = np.asarray(w, dtype=np.float64).reshape(-1) / float(gamma)
    lim = max(3.0, float(np.quantile(np.abs(x), 0.999)))
    edges = np.linspace(-lim, lim, bins + 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    for code, sel in ((-1, x <= -0.5), (0, np.abs(x) < 0.5), (1, x >= 0.5)):
        share = 100.0 * np.count_nonzero(sel) / x.size
        ax.hist(x[sel], bins=edges, color=TERNARY_COLOURS[code], alpha=0.85,
                label=f"→ {CODE_TEXT[code]} ({share:.1f} % of weights)")
    for s in (-0.5, 0.5):
        ax.axvline(s, color="black", linestyle="--", linewidth=1,
                   label="rounding thresholds ±γ/2" if s > 0 else None)
    ax.set_title(title)
    ax.set_xlabel("latent weight w / γ (units of γ = mean|W|)")
    ax.set_ylabel("weights per bin (count)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def code_shares(shares: Mapping[str, Sequence[float]], *, title: str) -> "Figure":
    """Grouped bars: for each series (label → (share −1, share 0, share +1) in [0, 1]) the share
    of each code, in %."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    n = len(shares)
    width = 0.8 / max(n, 1)
    cmap = plt.get_cmap("tab10")
    for i, (label, s) in enumerate(shares.items()):
        s = np.asarray(s, dtype=float)
        if s.shape != (3,):
            raise ValueError(f"code_shares: series {label!r} must hold 3 shares (−1, 0, +1); got shape {s.shape}")
        xs = np.arange(3) + (i - (n - 1) / 2) * width
        bars = ax.bar(xs, 100 * s, width=width, color=cmap(i), label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(3), ["−1", "0", "+1"])
    ax.set_title(title)
    ax.set_xlabel("ternary code t")
    ax.set_ylabel("share of weights (%)")
    ax.set_ylim(0, 100 * max(max(np.asarray(s).max() for s in shares.values()), 0.1) * 1.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def output_scatter(y_ref: np.ndarray, y_approx: np.ndarray, *, title: str, xlabel: str, ylabel: str,
                   max_points: int = 4000, seed: int = 0) -> "Figure":
    """Scatter of an approximate output against its reference, with the line y = x."""
    plt = _plt()
    a = np.asarray(y_ref, dtype=np.float64).reshape(-1)
    b = np.asarray(y_approx, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"output_scatter: shapes differ, {a.shape} vs {b.shape}")
    if a.size > max_points:  # a fixed random subset keeps the picture readable and fast
        idx = np.random.default_rng(seed).choice(a.size, max_points, replace=False)
        a, b = a[idx], b[idx]
    lim = float(max(np.abs(a).max(), np.abs(b).max(), 1e-12)) * 1.05
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(a, b, s=4, alpha=0.4, color="#3b6fb6", label=f"{a.size} outputs")
    ax.plot([-lim, lim], [-lim, lim], color="black", linewidth=1, label="y = x (no error)")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def activation_error(err_steps: np.ndarray, *, title: str, bins: int = 51) -> "Figure":
    """Histogram of the int8 rounding error ``q − x·s_x``, in quantisation steps (1/s_x)."""
    plt = _plt()
    e = np.asarray(err_steps, dtype=np.float64).reshape(-1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(e, bins=np.linspace(-0.6, 0.6, bins + 1), color="#3b6fb6", label=f"{e.size} activations")
    for s in (-0.5, 0.5):
        ax.axvline(s, color="black", linestyle="--", linewidth=1,
                   label="bound ±½ step" if s > 0 else None)
    ax.set_title(title)
    ax.set_xlabel("rounding error q − x·s_x (steps of 1/s_x)")
    ax.set_ylabel("activations per bin (count)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rounding_modes(modes: Sequence[str] = ("half_even", "half_away"), *, title: str,
                   lo: float = -3.0, hi: float = 3.0) -> "Figure":
    """How ``bitnet_lab.quant.round_int`` rounds under each mode over ``[lo, hi]``: the shared
    staircase, and at every exact .5 tie one marker per mode (where the modes can differ)."""
    plt = _plt()
    from bitnet_lab.quant import round_int

    grid = np.linspace(lo, hi, int(round((hi - lo) * 400)) + 1).astype(np.float32)
    off_tie = np.abs(grid - np.trunc(grid)) != 0.5
    base = round_int(grid, modes[0]).astype(np.float64)
    for m in modes[1:]:
        if not np.array_equal(base[off_tie], round_int(grid, m)[off_tie]):
            raise ValueError(f"rounding_modes: {modes[0]} and {m} differ away from the .5 ties")
    ties = np.arange(np.ceil(lo - 0.5), np.floor(hi - 0.5) + 1) + 0.5
    ties = ties[(ties >= lo) & (ties <= hi)].astype(np.float32)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.where(off_tie, grid, np.nan), np.where(off_tie, base, np.nan), color="#555555",
            linewidth=1.5, label="every mode (values off the ties)")
    markers = ["o", "s", "^", "D"]
    shift = np.linspace(-0.06, 0.06, len(modes)) if len(modes) > 1 else [0.0]
    for i, m in enumerate(modes):
        ax.scatter(ties + shift[i], round_int(ties, m), marker=markers[i % len(markers)], s=40,
                   zorder=3, label=f"{m} at the .5 ties")
    ax.set_xticks(np.arange(np.ceil(lo), np.floor(hi) + 1))
    ax.set_title(title)
    ax.set_xlabel("x·s_x before rounding (units of one int8 step)")
    ax.set_ylabel("rounded integer q")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def tensor_overview(t: np.ndarray, *, title: str, rows: int = 48, cols: int = 96) -> "Figure":
    """A ternary tensor at a glance: the top-left ``rows × cols`` codes as an image (left) and
    the per-row share of zeros over all rows (right)."""
    plt = _plt()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    t = np.asarray(t)
    M, K = t.shape
    patch = t[: min(rows, M), : min(cols, K)]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    cmap = ListedColormap([TERNARY_COLOURS[-1], TERNARY_COLOURS[0], TERNARY_COLOURS[1]])
    ax0.imshow(patch, cmap=cmap, vmin=-1.5, vmax=1.5, interpolation="nearest", aspect="auto")
    ax0.set_title(f"codes of the top-left {patch.shape[0]}×{patch.shape[1]} corner")
    ax0.set_xlabel("input feature k (column index)")
    ax0.set_ylabel("output feature (row index)")
    ax0.legend(handles=[Patch(color=TERNARY_COLOURS[c], label=f"t = {CODE_TEXT[c]}") for c in (-1, 0, 1)],
               loc="upper right", fontsize=7, framealpha=0.9)
    zero_rows = 100.0 * (t == 0).mean(axis=1)
    ax1.hist(zero_rows, bins=30, color=TERNARY_COLOURS[0], edgecolor="#555555",
             label=f"{M} rows")
    ax1.axvline(zero_rows.mean(), color="black", linestyle="--", linewidth=1,
                label=f"tensor mean {zero_rows.mean():.1f} %")
    ax1.set_title("share of zeros per row")
    ax1.set_xlabel("zeros in the row (%)")
    ax1.set_ylabel("rows per bin (count)")
    ax1.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def zero_shares_by_tensor(records: Sequence[tuple[int, str, float]], *, title: str,
                          band: Optional[tuple[float, float]] = None) -> "Figure":
    """Share of zero codes of every ternary tensor: ``records`` = (layer, projection, share in
    [0, 1]). One colour per projection, layers along x; ``band`` shades the expected range."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    projs = list(dict.fromkeys(r[1] for r in records))
    cmap = plt.get_cmap("tab10")
    offsets = np.linspace(-0.3, 0.3, len(projs)) if len(projs) > 1 else [0.0]
    for i, proj in enumerate(projs):
        pts = [(layer, share) for layer, p, share in records if p == proj]
        ax.scatter([layer + offsets[i] for layer, _ in pts], [100 * s for _, s in pts],
                   color=cmap(i % 10), s=18, label=proj)
    if band is not None:
        ax.axhspan(100 * band[0], 100 * band[1], color="#4caf50", alpha=0.12,
                   label=f"expected {100 * band[0]:.0f}–{100 * band[1]:.0f} %")
    layers = sorted({r[0] for r in records})
    if layers:
        ax.set_xticks(layers)
    ax.set_title(title)
    ax.set_xlabel("layer (index)")
    ax.set_ylabel("zero codes (% of the tensor)")
    ax.legend(fontsize=7, ncol=4, loc="best")
    fig.tight_layout()
    return fig


# =============================================================================================
# Notebook 02: byte layouts, bit maps, bits per weight, GGUF
# =============================================================================================


@dataclass(frozen=True)
class BitMap:
    """Which weights each probed bit of a packed ternary blob holds, as the *reader* sees it.

    ``owners[(byte, bit)]`` is a sorted tuple of flat weight indices ``r·K + k`` that change
    when that bit is flipped (``bit`` 0 = least significant), ``()`` when flipping it changes
    nothing, or ``None`` when no flip of it decodes (every base gave an invalid code).
    """

    layout: str
    shape: tuple[int, int]
    owners: Mapping[tuple[int, int], Optional[tuple[int, ...]]]

    @property
    def bytes(self) -> list[int]:
        return sorted({b for b, _ in self.owners})

    def groups(self) -> list[tuple[int, int, int, Optional[tuple[int, ...]]]]:
        """The code words: runs of neighbouring bits of one byte whose owners overlap, merged,
        as ``(byte, high bit, low bit, owners)`` (owners = the union over the run), bytes
        ascending, bits from 7 down to 0.

        Overlap, not equality, is the rule because a multi-weight code (TL1's pair index
        ``3·t0 + t1 + 4``, TQ1_0's five trits) has bits that move only some of its weights from
        a given base; they still belong to one code word, joined through a shared weight. Bits
        of separate 2-bit codes (I2_S, TQ2_0) share no weight and stay apart."""
        out: list[tuple[int, int, int, Optional[tuple[int, ...]]]] = []
        for b in self.bytes:
            bits = [i for i in range(7, -1, -1) if (b, i) in self.owners]
            hi, lo, cur = bits[0], bits[0], self.owners[(b, bits[0])]
            for i in bits[1:]:
                own = self.owners[(b, i)]
                joins = i == lo - 1 and (
                    (own is None and cur is None) or (own == () and cur == ())
                    or (bool(own) and bool(cur) and not set(own).isdisjoint(cur))
                )
                if joins:
                    lo = i
                    if own:
                        cur = tuple(sorted(set(cur) | set(own)))
                else:
                    out.append((b, hi, lo, cur))
                    hi, lo, cur = i, i, own
            out.append((b, hi, lo, cur))
        return out

    def bits_of(self, weight: int) -> list[tuple[int, int]]:
        """The probed (byte, bit) positions that hold ``weight`` (flat index)."""
        return sorted(pos for pos, own in self.owners.items() if own and weight in own)

    def byte_of_weights(self) -> np.ndarray:
        """int64 (M, K): the first probed byte holding each weight, −1 where none was probed."""
        M, K = self.shape
        out = np.full(M * K, -1, dtype=np.int64)
        for (byte, _), own in sorted(self.owners.items(), reverse=True):  # lowest byte written last
            if own:
                out[list(own)] = byte
        return out.reshape(M, K)

    def label(self, owners: Optional[tuple[int, ...]]) -> str:
        """Short text for a group of weights: ``w5``; ``w0,32,64,96,128``; ``r3 k0–2``."""
        if owners is None:
            return "invalid"
        if not owners:
            return "no weight"
        M, K = self.shape
        rk = [divmod(n, K) for n in owners]
        if M == 1:
            return "w" + ",".join(str(k) for _, k in rk)
        rows = {r for r, _ in rk}
        ks = [k for _, k in rk]
        if len(rows) == 1 and ks == list(range(ks[0], ks[0] + len(ks))):
            r = rk[0][0]
            return f"r{r} k{ks[0]}" if len(ks) == 1 else f"r{r} k{ks[0]}–{ks[-1]}"
        return ",".join(f"({r},{k})" for r, k in rk)


def _probe_blob(layout: str, t: np.ndarray, tiling: Optional["TLTiling"]) -> np.ndarray:
    """The packed bytes of ``t`` that ``packing.unpack(layout, …)`` reads (no scales needed
    beyond what the layout carries: TQ blocks get d = 1.0)."""
    from bitnet_lab.quant import packing

    M, K = t.shape
    if layout == "i2_s":
        blob = packing.pack_i2_s(t)
    elif layout in ("tq1_0", "tq2_0"):
        d = np.ones((M, K // packing.QK_K), dtype=np.float16)
        blob = packing.pack(layout, t, block_scales=d)
    elif layout in ("tl1", "tl2"):
        blob = packing.pack(layout, t, tiling=tiling)
    elif layout == "hf_packed":
        blob = packing.pack_hf(t)
    else:
        raise CodecError(f"probe_bit_map: unknown layout {layout!r}")
    return np.ascontiguousarray(blob, dtype=np.uint8).reshape(-1).copy()


def probe_bit_map(
    layout: str,
    shape: tuple[int, int],
    *,
    tiling: Optional["TLTiling"] = None,
    byte_ranges: Optional[Iterable[tuple[int, int]]] = None,
    bases: Sequence[int] = (-1, 0, 1),
) -> BitMap:
    """Ask ``packing.unpack`` which weights each bit holds: flip one bit at a time and see which
    weights change.

    The layout is never written down here: for each base matrix (all weights equal to one of
    ``bases``), the base is packed with ``packing``, each bit of ``byte_ranges`` (half-open
    ``[start, stop)`` byte intervals; default: the whole blob) is flipped, the blob is decoded
    with ``packing.unpack``, and the weights that differ from the base are that bit's owners.
    Owners are unioned over the bases (a bit of a multi-weight code such as TL1's pair index
    may move only some of its weights from one base). Flips that make the blob undecodable
    (e.g. I2_S code 3) are skipped for that base.
    """
    from bitnet_lab.quant import packing

    M, K = (int(shape[0]), int(shape[1]))
    owners: dict[tuple[int, int], Optional[set]] = {}
    for base in bases:
        t0 = np.full((M, K), base, dtype=np.int8)
        blob = _probe_blob(layout, t0, tiling)
        ref = packing.unpack(layout, blob, M, K, tiling=tiling).reshape(-1)
        if not np.array_equal(ref, t0.reshape(-1)):
            raise CodecError(f"probe_bit_map: {layout} does not round-trip the all-{base} matrix")
        ranges = list(byte_ranges) if byte_ranges is not None else [(0, blob.size)]
        for start, stop in ranges:
            if not 0 <= start < stop <= blob.size:
                raise CodecError(f"probe_bit_map: byte range [{start}, {stop}) outside the {blob.size}-byte blob")
            for byte in range(start, stop):
                for bit in range(8):
                    mod = blob.copy()
                    mod[byte] ^= np.uint8(1 << bit)
                    owners.setdefault((byte, bit), None)
                    try:
                        got = packing.unpack(layout, mod, M, K, tiling=tiling).reshape(-1)
                    except CodecError:
                        continue  # this flip is not a valid code from this base
                    changed = np.flatnonzero(got != ref)
                    cur = owners[(byte, bit)]
                    owners[(byte, bit)] = (cur or set()) | set(changed.tolist())
    frozen = {pos: (None if s is None else tuple(sorted(s))) for pos, s in owners.items()}
    return BitMap(layout, (M, K), frozen)


def bit_map_figure(bm: BitMap, *, title: str, byte_ranges: Optional[Sequence[tuple[int, int]]] = None,
                   names: Optional[Mapping[tuple[int, int], str]] = None) -> "Figure":
    """Draw probed bytes as rows of 8 bit cells (bit 7 on the left); the bits of one code word
    (:meth:`BitMap.groups`) form one box labelled with its weights and coloured by its first
    weight's flat index, so strides and interleavings show as colour patterns. Boxes of bits
    that hold no weight say so ("no weight": a scale, padding); hatched boxes are bits no
    flip of which decodes.

    ``byte_ranges``: the bytes to draw (default: all probed); ``names``: a note per range,
    written in the right margin next to its first byte (e.g. "index nibbles", "sign bits")."""
    plt = _plt()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    ranges = list(byte_ranges) if byte_ranges is not None else [(bm.bytes[0], bm.bytes[-1] + 1)]
    rows: list[Optional[int]] = []  # byte per drawn row; None = a gap between ranges
    for i, (a, b) in enumerate(ranges):
        if i:
            rows.append(None)
        rows.extend(range(a, b))
    row_of = {b: i for i, b in enumerate(rows) if b is not None}
    missing = [b for b in row_of if not any((b, i) in bm.owners for i in range(8))]
    if missing:
        raise ValueError(f"bit_map_figure: bytes {missing[:5]} were not probed")
    groups = [g for g in bm.groups() if g[0] in row_of]
    firsts = [min(g[3]) for g in groups if g[3]]
    norm = Normalize(vmin=min(firsts, default=0), vmax=max(max(firsts, default=1), min(firsts, default=0) + 1))
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(9.5, 1.6 + 0.3 * len(rows)))
    for byte, hi, lo, own in groups:
        y, x0, width = row_of[byte], 7 - hi, hi - lo + 1
        face = cmap(norm(min(own))) if own else "white"
        ax.add_patch(Rectangle((x0, y), width, 1, facecolor=face, alpha=0.55 if own else 1.0,
                               edgecolor="black", linewidth=0.8, hatch="//" if own is None else None))
        txt = bm.label(own)
        ax.text(x0 + width / 2, y + 0.5, txt, ha="center", va="center",
                fontsize=7 if len(txt) <= 3 * width + 4 else 5.5)
    ax.set_xlim(0, 8)
    ax.set_ylim(len(rows), 0)
    ax.set_xticks(np.arange(8) + 0.5, [f"{7 - i}" for i in range(8)])
    ax.set_yticks([i + 0.5 for i, b in enumerate(rows) if b is not None],
                  [str(b) for b in rows if b is not None], fontsize=7)
    for (a, _), note in (names or {}).items():
        if a in row_of and note:
            ax.text(8.15, row_of[a] + 0.5, note, fontsize=8, va="center", ha="left")
    ax.set_title(title)
    ax.set_xlabel("bit position in the byte (7 = most significant)")
    ax.set_ylabel("byte offset in the blob (bytes)")
    cax = make_axes_locatable(ax).append_axes("bottom", size=0.12, pad=0.6)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal",
                 label="first weight of the box (flat index r·K + k)")
    for c in cax.collections:
        c.set_alpha(0.55)
    fig.tight_layout()
    return fig


def byte_order_image(bm: BitMap, *, title: str) -> "Figure":
    """Where each weight of a block lives: the (M, K) matrix coloured by the byte offset that
    holds each weight (:meth:`BitMap.byte_of_weights`); tiles and interleavings show as
    colour patterns."""
    plt = _plt()
    offs = bm.byte_of_weights().astype(np.float64)
    offs[offs < 0] = np.nan
    M, K = bm.shape
    fig, ax = plt.subplots(figsize=(7, 1.8 + 3.2 * min(M / max(K, 1), 1.5)))
    im = ax.imshow(offs, cmap="viridis", interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax, label="byte offset holding the weight (bytes)")
    ax.set_title(title)
    ax.set_xlabel("input feature k (column index)")
    ax.set_ylabel("output feature (row index)")
    fig.tight_layout()
    return fig


def bits_per_weight(measured: Mapping[str, float], documented: Mapping[str, float], *, title: str,
                    in_file: Optional[Mapping[str, float]] = None) -> "Figure":
    """Bars of bits per weight of each layout's codes, measured from blob sizes, with the
    documented value marked; ``in_file`` adds a second bar per layout for everything the
    tensor occupies in a file (scale tails, hidden slots, converter padding)."""
    plt = _plt()
    names = list(measured)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(names))
    width = 0.38 if in_file else 0.6
    shift = -width / 2 if in_file else 0.0
    bars = ax.bar(x + shift, [measured[n] for n in names], color="#3b6fb6", width=width,
                  label="codes: 8·bytes / weights")
    ax.bar_label(bars, fmt="%.4f", fontsize=7, padding=2)
    if in_file:
        bars2 = ax.bar(x - shift, [in_file.get(n, math.nan) for n in names], color="#9ecae1", width=width,
                       hatch="//", edgecolor="#3b6fb6", label="whole blob in the file (tails, slots, padding)")
        ax.bar_label(bars2, fmt="%.4f", fontsize=7, padding=2)
    docs = [documented.get(n, math.nan) for n in names]
    ax.scatter(x + shift, docs, marker="_", s=700, color="#d1495b", linewidths=2, zorder=3, label="documented")
    ax.axhline(math.log2(3), color="black", linestyle=":", linewidth=1, label="log₂3 ≈ 1.585 (entropy bound)")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_title(title)
    ax.set_xlabel("layout")
    ax.set_ylabel("storage (bits per weight)")
    top = max(list(measured.values()) + [d for d in docs if not math.isnan(d)] + list((in_file or {}).values()))
    ax.set_ylim(0, top * 1.2)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=0.4)
    fig.tight_layout()
    return fig


def gguf_file_map(gf: "GGUFFile", *, title: str, tensor_info_start: Optional[int] = None) -> "Figure":
    """Where the bytes of a GGUF file go: header, metadata, tensor infos (+ padding), and each
    tensor's blob coloured by its ggml type. Top: the whole file on a linear axis (MiB), where
    the tensor data dominates; bottom: the same on a logarithmic axis (bytes), where the
    24-byte header and the tensor-info table become visible.

    ``tensor_info_start``: the byte where the tensor-info table starts (the end of the
    metadata); without it, metadata and tensor infos are drawn as one region."""
    plt = _plt()
    from matplotlib.patches import Patch

    regions: list[tuple[int, int, str]] = [(0, 24, "header")]
    if tensor_info_start is not None:
        regions.append((24, tensor_info_start, "metadata KV pairs"))
        regions.append((tensor_info_start, gf.data_offset, "tensor infos + padding"))
    else:
        regions.append((24, gf.data_offset, "metadata + tensor infos"))
    for ti in sorted(gf.tensor_infos, key=lambda ti: ti.offset):
        regions.append((ti.offset, ti.offset + ti.span, f"{ti.type_name} tensor data"))
    kinds = list(dict.fromkeys(k for _, _, k in regions))
    cmap = plt.get_cmap("tab10")
    colour = {k: cmap(i % 10) for i, k in enumerate(kinds)}
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(10, 3.8))
    for start, stop, kind in regions:
        ax0.broken_barh([(start / 2**20, (stop - start) / 2**20)], (0, 1), facecolors=colour[kind],
                        edgecolor="white", linewidth=0.3)
        lo = max(start, 1)  # a log axis starts at byte 1
        ax1.broken_barh([(lo, stop - lo)], (0, 1), facecolors=colour[kind], edgecolor="white", linewidth=0.3)
    ax0.set_xlim(0, gf.file_size / 2**20)
    ax0.set_title(f"the whole file, linear: {gf.file_size:,} bytes")
    ax0.set_xlabel("byte offset in the file (MiB)")
    ax1.set_xscale("log")
    ax1.set_xlim(1, gf.file_size)
    ax1.set_title("the same, logarithmic: header, metadata and tensor infos become visible")
    ax1.set_xlabel("byte offset in the file (bytes, log scale)")
    for ax in (ax0, ax1):
        ax.set_yticks([])
        ax.set_ylabel("file")
    fig.legend(handles=[Patch(color=colour[k], label=k) for k in kinds], loc="lower center",
               ncol=min(len(kinds), 4), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def hexdump(data: bytes | np.ndarray, *, start: int = 0, width: int = 16,
            notes: Optional[Mapping[int, str]] = None) -> str:
    """Classic hex dump (offset, hex bytes, ASCII) of ``data`` whose first byte is at file
    offset ``start``; ``notes`` maps a file offset to a note printed after its line."""
    b = bytes(np.asarray(data, dtype=np.uint8).tobytes() if isinstance(data, np.ndarray) else data)
    notes = dict(notes or {})
    lines = []
    for i in range(0, len(b), width):
        chunk = b[i:i + width]
        hexs = " ".join(f"{c:02x}" for c in chunk).ljust(3 * width - 1)
        text = "".join(chr(c) if 32 <= c < 127 else "." for c in chunk)
        line = f"{start + i:08x}  {hexs}  |{text}|"
        here = [n for off, n in sorted(notes.items()) if start + i <= off < start + i + width]
        if here:
            line += "  ← " + "; ".join(here)
        lines.append(line)
    return "\n".join(lines)


def table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain-text table with aligned columns (what a notebook prints instead of a DataFrame)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in rows]
    return "\n".join(out)


__all__ = [
    "BitMap",
    "FIGDIR_ENV",
    "TERNARY_COLOURS",
    "activation_error",
    "bit_map_figure",
    "bits_per_weight",
    "byte_order_image",
    "check_figure",
    "code_shares",
    "describe_figure",
    "figure_problems",
    "gguf_file_map",
    "hexdump",
    "latent_histogram",
    "output_scatter",
    "probe_bit_map",
    "rounding_modes",
    "show",
    "table",
    "tensor_overview",
    "zero_shares_by_tensor",
]
