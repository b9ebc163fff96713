"""Tables for `bitnet_lab.bench`: the rows a benchmark produced and how they print.

Two layers:

* :class:`Table` — a titled list of records (dicts of raw, JSON-able values) with the columns to
  show and footnotes. It renders as GitHub markdown (``to_markdown``), an HTML table for
  notebooks (``_repr_html_``), CSV of every raw field (``to_csv``) and JSON (``to_json``).
  Every section of a benchmark report (machine ceilings, kernels, load profile, …) is one.
* :class:`BenchRow` / :class:`BenchTable` — the pp / tg results in llama-bench's vocabulary
  (ggml-org/llama.cpp:tools/llama-bench/llama-bench.cpp): columns model | size | params |
  backend | isa | threads | test | t/s, the raw samples kept per row, and ``to_json()`` an array
  of objects with llama-bench's field names (``n_prompt``, ``n_gen``, ``n_threads``,
  ``samples_ns``, ``avg_ts``, ``stddev_ts``, …), so our output and llama-bench's parse the same
  way (:func:`rows_from_llama_bench_json`).

Statistics (llama-bench's): per run ``t/s = 1e9 · n_tokens / t_ns``; the table shows the mean
± the sample standard deviation (N − 1) *of those per-run rates*, not ``n / mean(t)``; one run
has standard deviation 0.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bitnet_lab.errors import BitnetLabError

# ---- number formatting ---------------------------------------------------------------------


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) — 0.0 for the deviation of fewer than two values, as
    llama-bench's ``stdev`` (an explicit early return, not NaN)."""
    n = len(values)
    if n == 0:
        return math.nan, 0.0
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)  # two-pass: no cancellation
    return mean, math.sqrt(var)


def fmt_size(nbytes: int) -> str:
    """llama-bench's size column: MiB below 1 GiB, else GiB, two decimals."""
    if nbytes < 1 << 30:
        return f"{nbytes / 2**20:.2f} MiB"
    return f"{nbytes / 2**30:.2f} GiB"


def fmt_params(n: int) -> str:
    """llama-bench's params column: millions below 1e9, else billions."""
    return f"{n / 1e6:.2f} M" if n < 1_000_000_000 else f"{n / 1e9:.2f} B"


def fmt_pm(mean: float, sd: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def fmt_num(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


# ---- the generic table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One shown column: ``key`` into a record, ``header``, alignment, and how to print a cell
    (``fmt(record) -> str``; default: the record's value for ``key``)."""

    key: str
    header: str
    align: str = "l"  # "l" | "r"
    fmt: Callable[[Mapping[str, Any]], str] | None = None

    def cell(self, record: Mapping[str, Any]) -> str:
        if self.fmt is not None:
            return self.fmt(record)
        return fmt_num(record.get(self.key))


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


@dataclass
class Table:
    """A titled table of records. ``columns`` say what markdown/HTML show; CSV and JSON carry
    every raw field of every record."""

    title: str
    columns: list[Column]
    records: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def table(self) -> Table:
        """Itself: every report section (ceilings, profiles, ...) has a ``table()``."""
        return self

    def cells(self) -> list[list[str]]:
        return [[c.cell(r) for c in self.columns] for r in self.records]

    def to_markdown(self, *, title: bool = True) -> str:
        """GitHub markdown: ``### title``, the table, then the notes as ``- `` lines."""
        out = [f"### {self.title}", ""] if title and self.title else []
        rows = [[_md_escape(s) for s in r] for r in self.cells()]
        heads = [_md_escape(c.header) for c in self.columns]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]

        def line(cells: Sequence[str]) -> str:
            parts = []
            for c, s, w in zip(self.columns, cells, widths):
                parts.append(s.rjust(w) if c.align == "r" else s.ljust(w))
            return "| " + " | ".join(parts) + " |"

        out.append(line(heads))
        out.append("| " + " | ".join(("-" * (w - 1) + ":") if c.align == "r" else "-" * w
                                     for c, w in zip(self.columns, widths)) + " |")
        out.extend(line(r) for r in rows)
        if not self.records:
            out.append("(no rows)")
        if self.notes:
            out.append("")
            out.extend(f"- {n}" for n in self.notes)
        return "\n".join(out)

    def fieldnames(self) -> list[str]:
        names: list[str] = []
        for r in self.records:
            names.extend(k for k in r if k not in names)
        return names

    def to_csv(self) -> str:
        """Every raw field of every record (lists joined with ``;``), header first."""
        buf = io.StringIO()
        names = self.fieldnames()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for r in self.records:
            w.writerow([_csv_value(r.get(k)) for k in names])
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "records": self.records, "notes": self.notes}

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:{'right' if c.align == 'r' else 'left'}'>{html.escape(c.header)}</th>"
                       for c in self.columns)
        body = []
        for cells in self.cells():
            tds = "".join(f"<td style='text-align:{'right' if c.align == 'r' else 'left'}'>{html.escape(s)}</td>"
                          for c, s in zip(self.columns, cells))
            body.append(f"<tr>{tds}</tr>")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<div><b>{html.escape(self.title)}</b><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>" + (f"<ul>{notes}</ul>" if notes else "") + "</div>")

    def __str__(self) -> str:
        return self.to_markdown()


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---- pp / tg results --------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRow:
    """One test (``pp N`` or ``tg N``) of one model on one backend and thread count.

    ``samples_ns``: wall time of each timed run (warm-up excluded). Rows parsed from a tool that
    printed only its statistics carry ``reported_ts = (mean, sd)`` and no samples.
    ``roofline_ts``: the decode roofline of this row's thread count (tg rows, when the machine
    ceilings were measured), see :func:`bitnet_lab.bench.decode_roofline`. ``bandwidth_gbs``:
    the read bandwidth of this row's runs, measured with its thread count before the first run
    and after every run (``bench(bracket_bandwidth=True)``; those figures in ``bandwidth_bracket``;
    each run takes the higher of its two brackets — the smaller percentage — and the row their
    mean, :func:`bitnet_lab.bench.bracketed_bandwidth`): on a machine whose bandwidth drifts, the
    row's roofline uses it instead of the ceilings section's figure.
    """

    model: str                       # short description, e.g. "bitnet-b1.58 2.41B I2_S"
    size: int                        # bytes of all tensors
    params: int                      # elements of all tensors
    backend: str                     # "native", "reference", "llama.cpp", "llama-bench", ...
    isa: str                         # ISA level the kernels ran on ("avx512vnni", "xla", "-")
    threads: int | None              # None: the backend chooses (JAX/XLA)
    n_prompt: int
    n_gen: int
    samples_ns: tuple[int, ...] = ()
    reported_ts: tuple[float, float] | None = None
    roofline_ts: float | None = None
    model_filename: str = ""
    tool: str = "bitnet_lab"
    test_time: str = ""              # RFC 3339, when the test ran
    use_mmap: bool = True            # llama-bench's -mmp: weights used in place from the file's map
    bandwidth_gbs: float | None = None  # read bandwidth of this row's runs (GB/s), when bracketed
    bandwidth_bracket: tuple[float, ...] | None = None  # before run 1, after each run: best passes, GB/s

    @property
    def test(self) -> str:
        """llama-bench's test label: ``pp512``, ``tg128`` or ``pp512+tg128``."""
        if self.n_prompt > 0 and self.n_gen == 0:
            return f"pp{self.n_prompt}"
        if self.n_gen > 0 and self.n_prompt == 0:
            return f"tg{self.n_gen}"
        return f"pp{self.n_prompt}+tg{self.n_gen}"

    @property
    def n_tokens(self) -> int:
        return self.n_prompt + self.n_gen

    @property
    def samples_ts(self) -> tuple[float, ...]:
        """Tokens per second of each run: 1e9 · n_tokens / t_ns."""
        return tuple(1e9 * self.n_tokens / ns for ns in self.samples_ns)

    @property
    def avg_ts(self) -> float:
        if self.samples_ns:
            return mean_sd(self.samples_ts)[0]
        return self.reported_ts[0] if self.reported_ts else math.nan

    @property
    def stddev_ts(self) -> float:
        if self.samples_ns:
            return mean_sd(self.samples_ts)[1]
        return self.reported_ts[1] if self.reported_ts else math.nan

    @property
    def avg_ns(self) -> float:
        return mean_sd(self.samples_ns)[0] if self.samples_ns else math.nan

    @property
    def stddev_ns(self) -> float:
        return mean_sd(self.samples_ns)[1] if self.samples_ns else math.nan

    @property
    def roofline_pct(self) -> float | None:
        """Measured t/s as a percentage of the roofline, when one is attached."""
        if not self.roofline_ts or math.isnan(self.avg_ts):
            return None
        return 100.0 * self.avg_ts / self.roofline_ts

    def record(self) -> dict[str, Any]:
        """llama-bench's JSON field names, plus ours (backend, isa, test, roofline, tool)."""
        return {
            "tool": self.tool,
            "model_filename": self.model_filename,
            "model_type": self.model,
            "model_size": self.size,
            "model_n_params": self.params,
            "backend": self.backend,
            "isa": self.isa,
            "n_threads": self.threads,
            "use_mmap": self.use_mmap,
            "n_prompt": self.n_prompt,
            "n_gen": self.n_gen,
            "test": self.test,
            "test_time": self.test_time,
            "avg_ns": _num(self.avg_ns),
            "stddev_ns": _num(self.stddev_ns),
            "avg_ts": _num(self.avg_ts),
            "stddev_ts": _num(self.stddev_ts),
            "roofline_ts": self.roofline_ts,
            "roofline_pct": self.roofline_pct,
            "bandwidth_gbs": self.bandwidth_gbs,
            "bandwidth_bracket": list(self.bandwidth_bracket) if self.bandwidth_bracket else None,
            "samples_ns": list(self.samples_ns),
            "samples_ts": list(self.samples_ts),
        }


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else v


def _roofline_cell(r: Mapping[str, Any]) -> str:
    pct, roof = r.get("roofline_pct"), r.get("roofline_ts")
    if pct is None or roof is None:
        return "-"
    return f"{pct:.0f}% of {roof:.1f}"


@dataclass
class BenchTable:
    """The pp / tg results: rows with their raw samples, the machine they ran on, notes.

    ``print(table)`` / ``table.to_markdown()`` give llama-bench's table (plus a ``roofline``
    column when any tg row has one); ``to_csv()`` every field; ``to_json()`` an array of
    llama-bench-style objects (machine fields ``cpu_info`` and ``build_commit`` in each);
    notebooks show ``_repr_html_``.
    """

    rows: list[BenchRow]
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    title: str = "pp / tg throughput (tokens per second)"

    # -- building ----------------------------------------------------------------------------
    def __add__(self, other: BenchTable) -> BenchTable:
        notes = self.notes + [n for n in other.notes if n not in self.notes]
        return BenchTable(self.rows + other.rows, self.machine or other.machine, notes, self.title)

    def with_roofline(self, roofline_for_row: Callable[[BenchRow], float | None]) -> BenchTable:
        """A copy whose tg rows of bitnet_lab's own backends carry a decode roofline
        (``roofline_for_row(row) -> tokens/s`` or None)."""
        rows = [replace(r, roofline_ts=roofline_for_row(r))
                if r.n_gen > 0 and r.n_prompt == 0 and r.tool == "bitnet_lab" else r for r in self.rows]
        return BenchTable(rows, dict(self.machine), list(self.notes), self.title)

    # -- rendering ---------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        return [r.record() for r in self.rows]

    def table(self) -> Table:
        cols = [
            Column("model_type", "model"),
            Column("model_size", "size", "r", lambda r: fmt_size(r["model_size"])),
            Column("model_n_params", "params", "r", lambda r: fmt_params(r["model_n_params"])),
            Column("backend", "backend"),
            Column("isa", "isa"),
            Column("n_threads", "threads", "r", lambda r: "-" if r["n_threads"] is None else str(r["n_threads"])),
        ]
        if any(not r.use_mmap for r in self.rows):  # llama-bench shows a non-default -mmp as a column
            cols.append(Column("use_mmap", "mmap", "r", lambda r: str(int(r["use_mmap"]))))
        cols += [
            Column("test", "test", "r"),
            Column("avg_ts", "t/s", "r", lambda r: "-" if r["avg_ts"] is None else fmt_pm(r["avg_ts"], r["stddev_ts"] or 0.0)),
        ]
        if any(r.roofline_ts for r in self.rows):
            cols.append(Column("roofline_pct", "roofline", "r", _roofline_cell))
        notes = list(self.notes)
        if self.machine:
            notes.append(machine_line(self.machine))
        return Table(self.title, cols, self.records(), notes)

    def to_markdown(self, *, title: bool = False) -> str:
        return self.table().to_markdown(title=title)

    def to_csv(self) -> str:
        return self.table().to_csv()

    def to_json(self, *, indent: int | None = 2) -> str:
        """A JSON array, one object per row, llama-bench's field names (+ machine fields)."""
        m = self.machine
        extra = {"cpu_info": m.get("cpu"), "build_commit": m.get("commit"), "bitnet_lab_version": m.get("version")}
        return json.dumps([{**r, **extra} for r in self.records()], indent=indent, default=_json_default)

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __str__(self) -> str:
        return self.to_markdown()

    def __len__(self) -> int:
        return len(self.rows)


def machine_line(m: Mapping[str, Any]) -> str:
    """One line naming the machine and the build: what llama-bench prints as its footer."""
    parts = [f"bitnet_lab {m.get('version', '?')}"]
    if m.get("commit"):
        parts[0] += f" ({m['commit']}{'+dirty' if m.get('dirty') else ''})"
    if m.get("cpu"):
        parts.append(f"CPU: {m['cpu']}")
    if m.get("cores"):
        parts.append(f"{m['cores']} cores")
    if m.get("date"):
        parts.append(m["date"])
    return ", ".join(parts)


# ---- parsing llama-bench's JSON (and ours) -------------------------------------------------


def _as_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    v = obj.get(key)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise BitnetLabError(f"llama-bench JSON {where}: field {key!r} must be an integer, got {v!r}") from None


def rows_from_llama_bench_json(text: str, *, backend: str = "llama-bench", tool: str = "llama-bench") -> list[BenchRow]:
    """Rows from llama-bench's ``-o json`` (an array) or ``-o jsonl`` (one object a line) output,
    or from :meth:`BenchTable.to_json`.

    Required per object: ``n_prompt``, ``n_gen``, ``n_threads`` and either ``samples_ns`` (the
    raw runs; statistics are recomputed from them) or ``avg_ts``/``stddev_ts``. ``model_type``,
    ``model_size``, ``model_n_params``, ``model_filename``, ``test_time`` are kept when present.
    Rows that carry our own ``backend``/``isa``/``tool`` fields keep them. Raises BitnetLabError
    naming the object and field on malformed input."""
    text = text.strip()
    if not text:
        raise BitnetLabError("llama-bench printed no JSON (empty output)")
    try:
        if text.startswith("["):
            objs = json.loads(text)
        else:
            objs = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise BitnetLabError(f"llama-bench output is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(objs, list):
        raise BitnetLabError(f"llama-bench JSON: expected an array of objects, got {type(objs).__name__}")
    rows = []
    for i, o in enumerate(objs):
        where = f"object {i}"
        if not isinstance(o, dict):
            raise BitnetLabError(f"llama-bench JSON {where}: expected an object, got {type(o).__name__}")
        n_prompt, n_gen = _as_int(o, "n_prompt", where), _as_int(o, "n_gen", where)
        threads = o.get("n_threads")
        threads = None if threads is None else _as_int(o, "n_threads", where)
        samples = o.get("samples_ns")
        reported = None
        if isinstance(samples, list) and samples:
            try:
                samples_t = tuple(int(s) for s in samples)
            except (TypeError, ValueError):
                raise BitnetLabError(f"llama-bench JSON {where}: samples_ns must hold integers") from None
            if min(samples_t) <= 0:
                raise BitnetLabError(f"llama-bench JSON {where}: samples_ns must be positive, got {min(samples_t)}")
        else:
            samples_t = ()
            if o.get("avg_ts") is None:
                raise BitnetLabError(f"llama-bench JSON {where}: neither samples_ns nor avg_ts")
            reported = (float(o["avg_ts"]), float(o.get("stddev_ts") or 0.0))
        rows.append(BenchRow(
            model=str(o.get("model_type") or o.get("model_filename") or "?"),
            size=int(o.get("model_size") or 0),
            params=int(o.get("model_n_params") or 0),
            backend=str(o.get("backend") or backend),
            isa=str(o.get("isa") or "-"),
            threads=threads,
            n_prompt=n_prompt,
            n_gen=n_gen,
            samples_ns=samples_t,
            reported_ts=reported,
            roofline_ts=o.get("roofline_ts"),
            model_filename=str(o.get("model_filename") or ""),
            tool=str(o.get("tool") or tool),
            test_time=str(o.get("test_time") or ""),
        ))
    return rows
