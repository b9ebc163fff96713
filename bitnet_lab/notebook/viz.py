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
    from bitnet_lab.quant.tiling import TLTiling

FIGDIR_ENV = "BITNET_LAB_FIGDIR"

# One colour per ternary value, used by every figure that shows codes (−1, 0, +1).
TERNARY_COLOURS = {-1: "#3b6fb6", 0: "#bdbdbd", 1: "#d1495b"}
CODE_TEXT = {-1: "−1", 0: "0", 1: "+1"}


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ModuleNotFoundError(f"the notebook figures need matplotlib ({e}): "
                                  "pip install 'bitnet_lab[notebook]'", name="matplotlib") from None
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


# =============================================================================================
# Notebook 03: lookup tables (TL1 / TL2)
# =============================================================================================


def lut_entries(labels: Sequence[str], values: Sequence[float], *, kinds: Sequence[str], title: str,
                xlabel: str, ylabel: str = "table entry (int16)") -> "Figure":
    """Bars of the entries of one lookup table (or of every weight pattern it serves), one bar per
    ``labels`` item, coloured by ``kinds`` (e.g. "stored entry", "padding", "stored entry,
    negated by the sign bit"); one legend entry per kind, the value written on each bar."""
    plt = _plt()
    if not (len(labels) == len(values) == len(kinds)):
        raise ValueError(f"lut_entries: {len(labels)} labels, {len(values)} values, {len(kinds)} kinds")
    vals = np.asarray(values, dtype=np.float64)
    order = list(dict.fromkeys(kinds))
    cmap = plt.get_cmap("tab10")
    colour = {k: cmap(i % 10) for i, k in enumerate(order)}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.36 * len(labels) + 1.5), 3.8))
    x = np.arange(len(labels))
    for k in order:
        sel = np.array([kk == k for kk in kinds])
        bars = ax.bar(x[sel], vals[sel], color=colour[k], label=k, hatch="//" if "negat" in k else None,
                      edgecolor="black", linewidth=0.4)
        ax.bar_label(bars, fmt="%d", fontsize=7, padding=1)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, labels, rotation=90 if len(labels) > 12 else 0, fontsize=7)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    lim = max(float(np.abs(vals).max()), 1.0) * 1.2
    ax.set_ylim(-lim, lim * 1.6)     # the band above the tallest bar holds the legend
    ax.legend(fontsize=7, loc="upper left", ncol=len(order))
    fig.tight_layout()
    return fig


def byte_planes(planes: np.ndarray, *, title: str, n_tables: int = 8) -> "Figure":
    """The first ``n_tables`` tables of a LUT buffer in byte-plane form (uint8 ``(n, 32)``: 16 low
    bytes, then 16 high bytes of the int16 entries), one row per table, each byte written in hex."""
    plt = _plt()
    p = np.asarray(planes)
    if p.dtype != np.uint8 or p.ndim != 2 or p.shape[1] != 32:
        raise ValueError(f"byte_planes: need uint8 (n, 32) tables, got {p.dtype} {p.shape}")
    p = p[:n_tables]
    # cells ~0.42 × 0.42 in: two hex digits at 9 pt fit with room to spare
    fig, ax = plt.subplots(figsize=(15, 1.5 + 0.42 * p.shape[0]))
    im = ax.imshow(p, cmap="viridis", vmin=0, vmax=255, aspect="auto", interpolation="nearest")
    for (r, c), v in np.ndenumerate(p):
        ax.text(c, r, f"{int(v):02x}", ha="center", va="center", fontsize=9, family="monospace",
                color="white" if v < 128 else "black")
    ax.axvline(15.5, color="red", linewidth=1.5)
    ax.set_xticks(range(32), [str(i % 16) for i in range(32)], fontsize=8)
    ax.set_yticks(range(p.shape[0]))
    ax.set_title(title)
    ax.set_xlabel("byte of the table: entries 0–15, low bytes | entries 0–15, high bytes")
    ax.set_ylabel("table j (activation group)")
    fig.colorbar(im, ax=ax, label="byte value (0–255)", pad=0.01)
    fig.tight_layout()
    return fig


def stacked_bars(parts: Mapping[str, Mapping[str, float]], *, title: str, xlabel: str, ylabel: str,
                 fmt: str = "{:.3g}") -> "Figure":
    """One stacked bar per outer key of ``parts`` (a category), stacked from its inner items
    (label → value, same labels in every category); the total is written on top."""
    plt = _plt()
    cats = list(parts)
    stacks = list(dict.fromkeys(k for c in cats for k in parts[c]))
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(cats) + 3.0), 4.4))
    x = np.arange(len(cats))
    bottom = np.zeros(len(cats))
    for i, k in enumerate(stacks):
        v = np.array([float(parts[c].get(k, 0.0)) for c in cats])
        ax.bar(x, v, bottom=bottom, color=cmap(i % 10), label=k, width=0.6)
        bottom += v
    for xi, tot in zip(x, bottom, strict=True):
        ax.text(xi, tot, fmt.format(tot), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, cats, fontsize=8)
    ax.set_ylim(0, float(bottom.max()) * 1.2 if bottom.max() > 0 else 1.0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


# =============================================================================================
# Notebook 04: kernels step by step
# =============================================================================================


def throughput_by_version(records: Sequence[Mapping[str, Any]], *, title: str, key: str = "gop_s",
                          ylabel: str = "throughput (GOP/s, 2 ops per multiply-add, log scale)") -> "Figure":
    """Grouped bars from kernel benchmark records (dicts with ``op``, ``version``, ``isa``,
    ``threads`` and ``key``; records without ``key`` — unverified rows — are left out): one group
    per (op, version, isa), one bar per thread count, on a log axis (scalar and SIMD versions
    differ by orders of magnitude)."""
    plt = _plt()
    recs = [r for r in records if r.get(key) is not None]
    if not recs:
        raise ValueError(f"throughput_by_version: no record has a {key!r} value")
    groups = list(dict.fromkeys((r["op"], r["version"], r["isa"]) for r in recs))
    threads = sorted({int(r["threads"]) for r in recs})
    value = {(r["op"], r["version"], r["isa"], int(r["threads"])): float(r[key]) for r in recs}
    cmap = plt.get_cmap("tab10")
    width = 0.8 / len(threads)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(groups) + 2.5), 4.2))
    x = np.arange(len(groups))
    for i, t in enumerate(threads):
        ys = [value.get((*g, t), math.nan) for g in groups]
        bars = ax.bar(x + (i - (len(threads) - 1) / 2) * width, ys, width=width, color=cmap(i),
                      label=f"{t} thread{'s' if t > 1 else ''}")
        ax.bar_label(bars, fmt="%.3g", fontsize=6, padding=1)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{op}\n{v} ({isa})" for op, v, isa in groups], fontsize=7, rotation=30, ha="right")
    ax.set_title(title)
    ax.set_xlabel("kernel version (op, version, ISA level)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def show_report(obj: Any) -> None:
    """Show a report or table object of the package (anything with ``__str__`` and, ideally,
    ``_repr_html_``): its HTML in Jupyter, with its text form as the plain-text fallback; its
    text form anywhere else (a plain ``python notebooks/…py`` run)."""
    if _in_kernel():
        from IPython.display import display

        data = {"text/plain": str(obj)}
        if hasattr(obj, "_repr_html_"):
            data["text/html"] = obj._repr_html_()
        display(data, raw=True)
    else:
        print(obj)


# =============================================================================================
# Notebook 05: lossless verification
# =============================================================================================


def agreement_grid(differ: np.ndarray, *, total: np.ndarray, projections: Sequence[str], title: str) -> "Figure":
    """Layer × projection grid of how many values of a capture differ between two passes
    (``differ``, ``total``: int ``(layers, projections)``); every cell reads ``differ/total``, and
    a cell with any difference is coloured."""
    plt = _plt()
    from matplotlib.colors import ListedColormap

    d, n = np.asarray(differ), np.asarray(total)
    if d.shape != n.shape or d.shape[1:] != (len(projections),):
        raise ValueError(f"agreement_grid: differ {d.shape} and total {n.shape} must be (layers, {len(projections)})")
    L = d.shape[0]
    fig, ax = plt.subplots(figsize=(1.3 * len(projections) + 2.5, 1.4 + 0.42 * L))
    cmap = ListedColormap(["#d4edda", "#f8d7da"])   # green: identical, red: some values differ
    im = ax.imshow((d > 0).astype(float), cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for (r, c), v in np.ndenumerate(d):
        ax.text(c, r, f"{int(v)}/{int(n[r, c])}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(projections)), projections, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(L), [str(i) for i in range(L)], fontsize=8)
    ax.set_title(title)
    ax.set_xlabel("projection")
    ax.set_ylabel("layer (index)")
    cb = fig.colorbar(im, ax=ax, ticks=[0.25, 0.75], fraction=0.046, pad=0.02)
    cb.ax.set_yticklabels(["identical", "differ"])
    cb.set_label("int32 values differing / compared")
    fig.tight_layout()
    return fig


def step_agreement(rel_err: Sequence[float], margin: Sequence[float], max_abs: Sequence[float], *,
                   tolerance: float, title: str) -> "Figure":
    """Two panels over the greedy steps of a side-by-side run: the relative logit difference
    ``max|Δ| / max|logit|`` against the tolerance (symlog: zero stays visible), and the
    reference's top-2 margin next to ``2·max|Δ|`` — a greedy token can only flip where the
    difference reaches half the margin."""
    plt = _plt()
    r, m, a = (np.asarray(v, dtype=np.float64) for v in (rel_err, margin, max_abs))
    steps = np.arange(r.size)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax0.plot(steps, r, marker="o", color="#3b6fb6", label="max|Δ logit| / max|logit|")
    ax0.axhline(tolerance, color="#d1495b", linestyle="--", label=f"tolerance {tolerance:g}")
    ax0.set_yscale("symlog", linthresh=tolerance * 1e-4)   # float-order differences (~1e-7) stay visible
    ax0.set_ylim(-tolerance * 1e-5, max(10 * tolerance, float(r.max(initial=0)) * 2))
    ax0.set_title("logits: native vs reference, per step")
    ax0.set_xlabel("greedy step (index)")
    ax0.set_ylabel("relative difference (symlog)")
    ax0.legend(fontsize=7, loc="upper left")
    ax1.bar(steps, m, color="#bdbdbd", label="reference top-1 − top-2 logit")
    ax1.scatter(steps, 2 * a, color="#d1495b", zorder=3, s=18, label="2 · max|Δ logit| (a flip needs ≥ margin)")
    ax1.set_title("how close each greedy choice was")
    ax1.set_xlabel("greedy step (index)")
    ax1.set_ylabel("logit units")
    ax1.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# =============================================================================================
# Notebook 06: generation
# =============================================================================================


def safe_label(text: str) -> str:
    """``text`` with the characters matplotlib's default font may lack (beyond Latin, Greek and
    Cyrillic; control characters) written as ``\\uXXXX`` escapes, so token pieces of any script
    label a figure without missing-glyph boxes."""
    return "".join(c if (c.isprintable() and ord(c) < 0x0530) else
                   (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}") for c in text)


def token_probs(labels: Sequence[str], probs: Sequence[float], *, kept: Sequence[bool], chosen: int,
                title: str, sampled: Optional[tuple[str, float, int, bool]] = None) -> "Figure":
    """Horizontal bars of the most likely next tokens (``labels``, ``probs`` in [0, 1], most
    likely first): the model's raw probability of each, coloured by whether the sampler's
    filters kept it; the sampled token (index ``chosen`` into the lists) is outlined. When the
    sampled token is not among them (``chosen = −1``), pass ``sampled = (label, probability,
    rank, kept)`` (rank 1 = most likely): it gets a row of its own below a gap, outlined and
    labelled with its rank, so the draw is always on the picture."""
    plt = _plt()
    p = 100.0 * np.asarray(probs, dtype=np.float64)
    if not (len(labels) == p.size == len(kept)):
        raise ValueError(f"token_probs: {len(labels)} labels, {p.size} probabilities, {len(kept)} flags")
    labels, kept = [safe_label(lb) for lb in labels], list(kept)
    y = np.arange(len(labels), dtype=np.float64)
    if chosen < 0 and sampled is not None:          # the draw fell outside the list: its own row
        s_label, s_prob, s_rank, s_kept = sampled
        labels.append(f"{safe_label(s_label)} (rank {int(s_rank)})")
        p = np.append(p, 100.0 * float(s_prob))
        kept.append(bool(s_kept))
        y = np.append(y, len(y) + 0.6)              # a gap says "not next to the others"
        chosen = len(labels) - 1
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.32 * len(labels)))
    for flag, colour, name in ((True, "#3b6fb6", "kept by the sampler's filters"),
                               (False, "#bdbdbd", "removed by top-k / top-p / min-p")):
        sel = np.array([bool(k) == flag for k in kept])
        if sel.any():
            ax.barh(y[sel], p[sel], color=colour, label=name)
    if 0 <= chosen < len(labels):
        ax.barh([y[chosen]], [p[chosen]], fill=False, edgecolor="#d1495b", linewidth=2.5, label="sampled token")
    if len(y) > 1 and y[-1] - y[-2] > 1:
        ax.axhline((y[-1] + y[-2]) / 2, color="grey", linewidth=0.8, linestyle=":")
    for yi, v in zip(y, p, strict=True):
        ax.text(v, yi, f" {v:.3g} %", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(float(p.max()), 1e-9) * 1.25)
    ax.set_title(title)
    ax.set_xlabel("probability under the model (%, before sampling filters)")
    ax.set_ylabel("candidate next token")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def token_timeline(t_ms: Sequence[float], *, title: str, n_prompt: Optional[int] = None) -> "Figure":
    """Wall time per generated token (``TokenEvent.t_ms``): the first bar includes the whole
    prompt's forward pass; a dashed line marks the mean of the others and its tokens/s."""
    plt = _plt()
    t = np.asarray(t_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("token_timeline: no tokens")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = np.arange(1, t.size + 1)
    first = "first token (prompt" + (f" of {n_prompt} tokens" if n_prompt else "") + " + sampling)"
    ax.bar(x[:1], t[:1], color="#d1495b", label=first)
    if t.size > 1:
        ax.bar(x[1:], t[1:], color="#3b6fb6", label="one decode step + sampling")
        mean = float(t[1:].mean())
        ax.axhline(mean, color="black", linestyle="--", linewidth=1,
                   label=f"mean of the decode steps: {mean:.2f} ms = {1000 / mean:.1f} tokens/s")
    ax.set_title(title)
    ax.set_xlabel("generated token (index)")
    ax.set_ylabel("wall time (ms)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


# =============================================================================================
# Notebook 07: profiling
# =============================================================================================


def op_breakdown(profiles: Mapping[str, Mapping[str, float]], *, title: str,
                 xlabel: str = "time per decode step (ms)") -> "Figure":
    """Horizontal grouped bars: one row per op (the union of the profiles' keys, in first-seen
    order), one bar per profile (label → {op: time})."""
    plt = _plt()
    if not profiles:
        raise ValueError("op_breakdown: no profile given")
    ops = list(dict.fromkeys(op for prof in profiles.values() for op in prof))
    cmap = plt.get_cmap("tab10")
    height = 0.8 / len(profiles)
    # every bar ~0.15 in (11 pt) tall: the 7 pt value labels of neighbouring bars cannot touch
    fig, ax = plt.subplots(figsize=(9, 1.8 + 0.15 * len(ops) * len(profiles) / 0.8))
    y = np.arange(len(ops))
    vals_all = [float(v) for prof in profiles.values() for v in prof.values()]
    top = max(vals_all, default=0.0)
    positive = [v for v in vals_all if v > 0]
    # a few ops (sync, lm_head) can be 100× the others: a log axis keeps every op visible
    log = bool(positive) and top / min(positive) > 100
    floor = min(positive) / 2 if log else 0.0
    for i, (label, prof) in enumerate(profiles.items()):
        vals = [float(prof.get(op, 0.0)) for op in ops]
        bars = ax.barh(y + (i - (len(profiles) - 1) / 2) * height, [max(v, floor) for v in vals],
                       left=floor if log else 0.0, height=height, color=cmap(i % 10), label=label)
        # on a linear axis, values under 1 % of the largest bar would only clutter the picture
        shown = [f"{v:.3g}" if (v > 0 if log else v >= 0.01 * top) else "" for v in vals]
        ax.bar_label(bars, labels=shown, fontsize=7, padding=2)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(floor, top * 4)     # room for the labels right of the longest bar
        xlabel += " (log scale)"
    else:
        ax.set_xlim(0, top * 1.15 if top > 0 else 1.0)
    ax.set_yticks(y, ops, fontsize=9)
    ax.set_ylim(len(ops) - 0.5, -0.5)   # first op on top
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("part of the forward pass")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def roofline(bandwidths: Mapping[str, float], peak: float, points: Mapping[str, tuple[float, float]], *,
             title: str, peak_label: str = "int8 dot peak") -> "Figure":
    """The roofline model on log–log axes: for each measured bandwidth (label → GB/s) the
    attainable throughput ``min(bandwidth · intensity, peak)`` (GOP/s), and the measured
    ``points`` (label → (operational intensity in ops/byte, GOP/s achieved))."""
    plt = _plt()
    if peak <= 0 or not bandwidths or any(b <= 0 for b in bandwidths.values()):
        raise ValueError(f"roofline: need a positive peak and bandwidths, got {peak}, {dict(bandwidths)}")
    xs = [i for i, _ in points.values()] + [peak / b for b in bandwidths.values()]
    lo, hi = min(xs) / 4, max(xs) * 4
    grid = np.geomspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(8, 4.6))
    styles = ["-", "--", "-.", ":"]
    for i, (label, bw) in enumerate(bandwidths.items()):
        ax.plot(grid, np.minimum(bw * grid, peak), color="black", linestyle=styles[i % 4], linewidth=1.2,
                label=f"{label}: {bw:.1f} GB/s")
    ax.axhline(peak, color="grey", linewidth=0.8, alpha=0.6, label=f"{peak_label}: {peak:.0f} GOP/s")
    cmap = plt.get_cmap("tab10")
    for i, (label, (inten, gops)) in enumerate(points.items()):
        ax.scatter([inten], [gops], s=60, color=cmap(i % 10), zorder=3, label=f"{label}: {gops:.3g} GOP/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("operational intensity (operations per byte read)")
    ax.set_ylabel("throughput (GOP/s, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def throughput_bars(records: Sequence[Mapping[str, Any]], *, title: str) -> "Figure":
    """Grouped bars of pp / tg results (``BenchTable.records()``: ``test``, ``backend``,
    ``n_threads``, ``avg_ts``, ``stddev_ts``): one group per test, one bar per backend and
    thread count, with the standard deviation as an error bar, on a log axis."""
    plt = _plt()
    recs = [r for r in records if r.get("avg_ts")]
    if not recs:
        raise ValueError("throughput_bars: no record with a t/s value")
    tests = list(dict.fromkeys(r["test"] for r in recs))
    who = list(dict.fromkeys((r["backend"], r["n_threads"]) for r in recs))
    val = {(r["test"], r["backend"], r["n_threads"]): (r["avg_ts"], r.get("stddev_ts") or 0.0) for r in recs}
    cmap = plt.get_cmap("tab10")
    width = 0.8 / len(who)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(tests) * max(1, len(who) / 3) + 3), 4.2))
    x = np.arange(len(tests))
    clipped = False
    lows, highs = [], []
    for i, (backend, thr) in enumerate(who):
        m = [val.get((t, backend, thr), (math.nan, 0.0)) for t in tests]
        means = np.array([v for v, _ in m], dtype=np.float64)
        sds = np.array([e for _, e in m], dtype=np.float64)
        # mean − sd can be ≤ 0, which a log axis cannot show (the bar would run off it): the lower
        # arm stops at a tenth of the mean, and the legend says so
        lo = np.minimum(sds, 0.9 * means)
        clipped |= bool(np.any(sds > lo))
        lows += list(means - lo)
        highs += list(means + sds)
        xs = x + (i - (len(who) - 1) / 2) * width
        ax.bar(xs, means, width=width, yerr=np.vstack([lo, sds]), capsize=2, color=cmap(i % 10),
               label=f"{backend}, " + ("threads chosen by the backend" if thr is None else f"{thr} thread(s)"))
        for xi, v, e in zip(xs, means, sds, strict=True):   # the value above its error bar, not on it
            if np.isfinite(v):
                ax.text(xi, (v + e) * 1.12, _count(v), ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    finite = [v for v in lows if np.isfinite(v) and v > 0]
    if finite:
        top = max(v for v in highs if np.isfinite(v))
        ax.set_ylim(min(finite) / 2, top * 8)   # room above for the labels and the legend
    ax.set_xticks(x, tests)
    ax.set_title(title)
    note = "error bars: ± 1 sd" + ("; lower arms stop at mean / 10 (a log axis has no 0)" if clipped else "")
    ax.set_xlabel("test (pp N: N prompt tokens in one call; tg N: N tokens one at a time)\n" + note)
    ax.set_ylabel("tokens per second (log scale)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def _count(v: float) -> str:
    """A t/s value as a person writes it: 20 320, 7 299, 427.1, 98.0."""
    if not np.isfinite(v):
        return ""
    return f"{v:,.0f}".replace(",", " ") if v >= 1000 else f"{v:.4g}"


# =============================================================================================
# Notebook 08: weight and activation statistics
# =============================================================================================


def _heatmap(ax: "Axes", data: np.ndarray, *, rows: Sequence[str], cols: Sequence[str], title: str,
             cbar: str, fmt: str, cmap: str, vmin: Optional[float] = None, vmax: Optional[float] = None):
    """One annotated layer × projection heatmap on ``ax`` with its colorbar."""
    im = ax.imshow(data, cmap=cmap, aspect="auto", interpolation="nearest", vmin=vmin, vmax=vmax)
    if data.size <= 120:  # values readable: write them in the cells
        lo, hi = im.get_clim()
        for (r, c), v in np.ndenumerate(data):
            dark = (v - lo) / ((hi - lo) or 1.0) < 0.5 if cmap != "RdBu_r" else abs(v) > 0.6 * max(abs(lo), abs(hi))
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=6.5,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("projection")
    ax.set_ylabel("layer (index)")
    ax.figure.colorbar(im, ax=ax, label=cbar, fraction=0.046, pad=0.02)


def weight_dashboard(zero: np.ndarray, gamma: np.ndarray, balance: np.ndarray, *, projections: Sequence[str],
                     activations: Mapping[str, np.ndarray], title: str) -> "Figure":
    """A model at a glance, four panels: the share of zero codes, the scale γ and the sign
    balance (share of +1 minus share of −1) of every ternary tensor (``(layers, projections)``
    arrays, shares in [0, 1]), and the range of the activations entering each quantisation
    point per layer (``activations``: label → ``(layers,)`` absmax values)."""
    plt = _plt()
    zero, gamma, balance = (np.asarray(a, dtype=np.float64) for a in (zero, gamma, balance))
    L = zero.shape[0]
    if not (zero.shape == gamma.shape == balance.shape == (L, len(projections))):
        raise ValueError(f"weight_dashboard: arrays {zero.shape}, {gamma.shape}, {balance.shape} "
                         f"must all be (layers, {len(projections)})")
    rows = [str(i) for i in range(L)]
    fig, axes = plt.subplots(2, 2, figsize=(12, 5.5 + 0.45 * min(L, 30)))
    _heatmap(axes[0, 0], 100 * zero, rows=rows, cols=projections, title="share of zero codes",
             cbar="zeros (% of the tensor)", fmt="{:.1f}", cmap="viridis")
    _heatmap(axes[0, 1], gamma, rows=rows, cols=projections, title="scale γ of each tensor",
             cbar="γ (what a ±1 code stands for)", fmt="{:.3g}", cmap="magma")
    lim = max(float(np.abs(100 * balance).max()), 0.1)
    _heatmap(axes[1, 0], 100 * balance, rows=rows, cols=projections, title="sign balance: share(+1) − share(−1)",
             cbar="balance (percentage points)", fmt="{:+.1f}", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax = axes[1, 1]
    for label, vals in activations.items():
        v = np.asarray(vals, dtype=np.float64)
        if v.shape != (L,):
            raise ValueError(f"weight_dashboard: activations {label!r} has shape {v.shape}, expected ({L},)")
        ax.plot(range(L), v, marker="o", label=label)
    ax.set_yscale("log")
    from matplotlib.ticker import LogFormatter

    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xticks(range(L) if L <= 30 else range(0, L, max(1, L // 15)))
    ax.set_title("absmax of the activations entering each int8 quantisation", fontsize=9)
    ax.set_xlabel("layer (index)")
    ax.set_ylabel("max |x| over the prompt (model units, log)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
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
    "agreement_grid",
    "bit_map_figure",
    "bits_per_weight",
    "byte_order_image",
    "byte_planes",
    "check_figure",
    "code_shares",
    "describe_figure",
    "figure_problems",
    "gguf_file_map",
    "hexdump",
    "latent_histogram",
    "lut_entries",
    "op_breakdown",
    "output_scatter",
    "probe_bit_map",
    "roofline",
    "rounding_modes",
    "safe_label",
    "show",
    "show_report",
    "stacked_bars",
    "step_agreement",
    "table",
    "tensor_overview",
    "throughput_bars",
    "throughput_by_version",
    "token_probs",
    "token_timeline",
    "weight_dashboard",
    "zero_shares_by_tensor",
]
