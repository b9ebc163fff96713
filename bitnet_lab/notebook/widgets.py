"""Widgets for the notebooks, and their text form when nobody can play with them.

Imported by notebooks only, never by ``import bitnet_lab``; ipywidgets is imported only when a
widget is really built.

``explore(fn, layer=range(n), tensor=["attn_q", ...])`` shows one control per keyword (a
slider for integer ranges, buttons or a drop-down for a few names, a selection slider for
anything else) and re-runs ``fn(layer=..., tensor=...)`` into an output area whenever a
control moves.

Headless — when no frontend can show a widget — the same call prints one line saying why and
runs ``fn`` for a few representative settings instead (the first value of every control, the
last, the middle), each under a header naming the values. Headless means any of:

- ``BITNET_LAB_HEADLESS=1`` in the environment (the notebook test runner sets it);
- not inside a Jupyter kernel (a plain ``python notebooks/01_….py``, or terminal IPython);
- ipywidgets not installed.

``BITNET_LAB_HEADLESS=0`` (or unset) lets the other checks decide; any other value is an error,
so a typo does not silently switch widgets off.

``chat(model, script=[...])`` is a chat box over a ``ChatSession`` (streamed answers, sampling
sliders, live tokens/s); headless it plays the scripted messages as text.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional, Sequence

HEADLESS_ENV = "BITNET_LAB_HEADLESS"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
# Names up to this many become toggle buttons; more become a drop-down.
MAX_BUTTONS = 7


def headless_reason() -> Optional[str]:
    """Why widgets cannot be shown here (a short sentence), or None when they can."""
    raw = os.environ.get(HEADLESS_ENV, "")
    v = raw.strip().lower()
    if v in _TRUE:
        return f"{HEADLESS_ENV}={raw}"
    if v not in _FALSE:
        raise ValueError(f"{HEADLESS_ENV} must be 0 or 1 (or unset); got {raw!r}")
    try:
        from IPython import get_ipython
    except ImportError:
        return "IPython is not installed"
    ip = get_ipython()
    if ip is None:
        return "not running under IPython"
    if not hasattr(ip, "kernel"):
        return "IPython without a Jupyter kernel (no frontend to draw widgets)"
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "ipywidgets is not installed (pip install 'bitnet_lab[notebook]')"
    return None


def is_headless() -> bool:
    """True when widgets degrade to text (see the module docstring)."""
    return headless_reason() is not None


# ---------------------------------------------------------------------------------------------
# Controls
# ---------------------------------------------------------------------------------------------


def options(name: str, values: Any) -> list[tuple[str, Any]]:
    """A control's choices as ``(label, value)`` pairs: from a ``range``, a sequence of values
    (labels are ``str(value)``) or a mapping label → value. Raises ValueError when empty."""
    if isinstance(values, Mapping):
        out = [(str(k), v) for k, v in values.items()]
    elif isinstance(values, (range, Sequence)) and not isinstance(values, (str, bytes)):
        out = [(str(v), v) for v in values]
    else:
        raise ValueError(
            f"control {name!r}: give a range, a list of values or a dict label -> value; got {type(values).__name__}"
        )
    if not out:
        raise ValueError(f"control {name!r} has no values to choose from")
    return out


def _int_progression(vals: list[Any]) -> Optional[tuple[int, int, int]]:
    """(min, max, step) when ``vals`` are ints in one increasing arithmetic progression."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return None
    if len(vals) == 1:
        return vals[0], vals[0], 1
    step = vals[1] - vals[0]
    if step <= 0 or any(b - a != step for a, b in zip(vals, vals[1:], strict=False)):
        return None
    return vals[0], vals[-1], step


def make_control(name: str, values: Any):
    """The ipywidget for one control (see the module docstring for which kind)."""
    import ipywidgets as w

    opts = options(name, values)
    vals = [v for _, v in opts]
    style = {"description_width": "initial"}
    prog = _int_progression(vals) if not isinstance(values, Mapping) else None
    if prog is not None:
        lo, hi, step = prog
        return w.IntSlider(value=lo, min=lo, max=hi, step=step, description=name,
                           continuous_update=False, style=style)
    if all(isinstance(v, str) for v in vals) and len(vals) <= MAX_BUTTONS:
        return w.ToggleButtons(options=opts, value=vals[0], description=name, style=style)
    if all(isinstance(v, str) for v in vals):
        return w.Dropdown(options=opts, value=vals[0], description=name, style=style)
    return w.SelectionSlider(options=opts, value=vals[0], description=name,
                             continuous_update=False, style=style)


def default_picks(controls: Mapping[str, Any], max_picks: int = 3) -> list[dict[str, Any]]:
    """The settings a headless run shows: every control at its first value, then at its last,
    then at its middle, without repeats, at most ``max_picks``."""
    if max_picks < 1:
        raise ValueError(f"max_picks must be >= 1; got {max_picks}")
    vals = {k: [v for _, v in options(k, c)] for k, c in controls.items()}
    picks: list[dict[str, Any]] = []
    for where in (lambda n: 0, lambda n: n - 1, lambda n: n // 2):
        p = {k: v[where(len(v))] for k, v in vals.items()}
        if p not in picks:
            picks.append(p)
    return picks[:max_picks]


def _check_picks(picks: Sequence[Mapping[str, Any]], controls: Mapping[str, Any]) -> None:
    for p in picks:
        if set(p) != set(controls):
            raise ValueError(f"pick {dict(p)} must set exactly the controls {sorted(controls)}")
        for k, v in p.items():
            allowed = [x for _, x in options(k, controls[k])]
            if v not in allowed:
                raise ValueError(f"pick {dict(p)}: {k}={v!r} is not one of the control's values")


def _describe(p: Mapping[str, Any], controls: Mapping[str, Any]) -> str:
    """``layer=0, tensor='attn_q'``; values of a dict control are shown by their label."""
    parts = []
    for k, v in p.items():
        if isinstance(controls[k], Mapping):
            label = next(lb for lb, x in options(k, controls[k]) if x == v)
            parts.append(f"{k}={label}")
        else:
            parts.append(f"{k}={v!r}")
    return ", ".join(parts)


def explore(
    fn: Callable[..., Any],
    *,
    picks: Optional[Sequence[Mapping[str, Any]]] = None,
    max_picks: int = 3,
    headless: Optional[bool] = None,
    **controls: Any,
) -> None:
    """Run ``fn(**setting)`` under one control per keyword of ``controls``.

    With a frontend: displays the controls and an output area that ``fn`` redraws (``fn``
    displays its own output: figures through ``viz.show``, text through ``print``).
    Headless (``headless=None`` asks :func:`headless_reason`): prints why, then runs ``fn`` for
    ``picks`` (default :func:`default_picks`), each under a header line.
    """
    if not controls:
        raise ValueError("explore needs at least one control, e.g. layer=range(4)")
    for k, c in controls.items():
        options(k, c)  # validates every control before anything runs
    reason = headless_reason() if headless is None else ("headless=True" if headless else None)
    if reason is None:
        import ipywidgets as w
        from IPython.display import display

        ctrls = {k: make_control(k, c) for k, c in controls.items()}
        out = w.interactive_output(fn, ctrls)
        display(w.VBox([w.HBox(list(ctrls.values())), out]))
        return
    chosen = list(picks) if picks is not None else default_picks(controls, max_picks)
    _check_picks(chosen, controls)
    total = 1
    for k, c in controls.items():
        total *= len(options(k, c))
    names = " × ".join(controls)
    print(f"[widgets off: {reason}] showing {len(chosen)} of {total} settings of {names}; "
          f"in JupyterLab these are live controls")
    for p in chosen:
        print(f"── {_describe(p, controls)} ──")
        fn(**p)


# ---------------------------------------------------------------------------------------------
# Chat
# ---------------------------------------------------------------------------------------------

# The sampling controls of the chat box and their start values (llama.cpp's defaults).
CHAT_SAMPLING = {"temp": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}


def _context_note(session: Any, shifts_before: int) -> str:
    """``120/256 in context`` and, when this turn shifted the context, how often."""
    shifted = session.n_shifts - shifts_before
    note = f"{session.n_past}/{session.n_ctx} in context"
    return note + (f", context shifted {shifted}x (the first {session.n_keep} tokens kept)" if shifted else "")


def _chat_turn_text(session: Any, message: str, n: int) -> Any:
    """One turn of ``session`` printed as it streams: the user line, the answer token by token,
    then a line of counters. Returns the turn's DoneEvent (None when the turn could not be sent:
    its reason is printed in one line)."""
    from bitnet_lab.errors import BitnetLabError
    from bitnet_lab.generate.loop import TokenEvent

    print(f"user: {message}")
    shifts = session.n_shifts
    try:
        events = session.send(message, n=n)
    except BitnetLabError as e:
        print(f"  [not sent: {e}]")
        return None
    print("assistant: ", end="", flush=True)
    done = None
    for ev in events:
        if isinstance(ev, TokenEvent):
            print(ev.text, end="", flush=True)
        else:
            done = ev
    print()
    print(f"  [{done.n_generated} tokens; prompt {done.n_prompt} tokens at {done.prompt_tokens_per_s:.1f} tokens/s; "
          f"generation {done.eval_tokens_per_s:.1f} tokens/s; stopped: {done.reason}; "
          f"{_context_note(session, shifts)}]")
    return done


def _chat_html(turns: Sequence[Sequence[str]]) -> str:
    import html

    rows = []
    for role, text in turns:
        colour = {"user": "#3b6fb6", "note": "#777777"}.get(role, "#d1495b")
        body = html.escape(text).replace("\n", "<br>") or "&nbsp;"
        rows.append(f"<div style='margin:2px 0'><b style='color:{colour}'>{role}:</b> {body}</div>")
    return "<div style='font-family:monospace'>" + "".join(rows) + "</div>"


def chat(
    model: Any,
    *,
    script: Sequence[str] = (),
    n: int = 48,
    seed: int = 0,
    system: Optional[str] = None,
    chat_format: Any = None,
    sampling: Optional[Mapping[str, float]] = None,
    headless: Optional[bool] = None,
    n_ctx: Optional[int] = None,
    ctx_shift: bool = True,
) -> Any:
    """A chat box over a :class:`bitnet_lab.generate.chat.ChatSession` of ``model``; returns the session.

    With a frontend: a transcript that streams the answer token by token, a message box (Enter
    or Send sends) with Reset, sliders for the sampler (temperature, top-k, top-p, min-p; read
    at every Send) and for the answer length (at most the context), and a live tokens/s
    counter. The ``script`` messages are sent first, so the box opens on a conversation. When
    the context fills, the session shifts it (keeps the system prompt, drops the oldest half of
    the rest; ``ctx_shift=False`` stops the answer instead) and the counters say so; a message
    that cannot fit at all gets a one-line note in the transcript, not a traceback.

    Headless (see :func:`headless_reason`): prints why, then plays ``script`` as text — each
    user message, the streamed answer and a line of counters — with the ``sampling`` settings.
    ``sampling``: start values for :data:`CHAT_SAMPLING`'s keys (``make_sampler`` arguments).
    """
    import time

    from bitnet_lab.generate.chat import ChatSession
    from bitnet_lab.generate.loop import TokenEvent
    from bitnet_lab.generate.sampling import make_sampler

    settings = {**CHAT_SAMPLING, **dict(sampling or {})}
    unknown = set(settings) - set(CHAT_SAMPLING)
    if unknown:
        raise ValueError(f"chat: unknown sampling setting(s) {sorted(unknown)}; known: {sorted(CHAT_SAMPLING)}")
    session = ChatSession(model, system=system, chat_format=chat_format, sampler=make_sampler(**settings), seed=seed,
                          n_ctx=n_ctx, ctx_shift=ctx_shift)
    reason = headless_reason() if headless is None else ("headless=True" if headless else None)
    if reason is not None:
        print(f"[widgets off: {reason}] a scripted chat of {len(script)} turn(s) instead of the chat box; "
              f"format {session.format.name}, sampler {session.sampler.name}, seed {session.seed}")
        for message in script:
            _chat_turn_text(session, message, n)
        return session

    import warnings

    import ipywidgets as w
    from IPython.display import display

    from bitnet_lab.errors import BitnetLabError

    style = {"description_width": "initial"}
    controls = {
        "temp": w.FloatSlider(value=settings["temp"], min=0.0, max=2.0, step=0.05, description="temperature",
                              style=style, continuous_update=False),
        "top_k": w.IntSlider(value=int(settings["top_k"]), min=0, max=200, description="top-k", style=style,
                             continuous_update=False),
        "top_p": w.FloatSlider(value=settings["top_p"], min=0.0, max=1.0, step=0.01, description="top-p",
                               style=style, continuous_update=False),
        "min_p": w.FloatSlider(value=settings["min_p"], min=0.0, max=0.5, step=0.01, description="min-p",
                               style=style, continuous_update=False),
    }
    # an answer longer than the context would only shift it again and again
    length = w.IntSlider(value=max(1, min(n, session.n_ctx)), min=1, max=session.n_ctx, description="max tokens",
                         style=style, continuous_update=False)
    transcript = w.HTML(_chat_html([]))
    stats = w.HTML(f"format {session.format.name}; seed {session.seed}")
    message = w.Text(placeholder="your message", description="you", style=style,
                     layout=w.Layout(width="60%"))
    send, reset = w.Button(description="Send", button_style="primary"), w.Button(description="Reset")
    out = w.Output()
    turns: list[list[str]] = [["system", system]] if system else []

    def run_turn(text: str) -> None:
        session.sampler = make_sampler(**{k: c.value for k, c in controls.items()})
        shifts = session.n_shifts
        try:
            events = session.send(text, n=length.value)   # raises before anything changes
        except BitnetLabError as e:                         # e.g. a message longer than the context
            turns.extend([["user", text], ["note", f"not sent: {e}"]])
            transcript.value = _chat_html(turns)
            stats.value = "message not sent (see the transcript)"
            return
        turns.extend([["user", text], ["assistant", ""]])
        transcript.value = _chat_html(turns)
        t0, n_tok = time.perf_counter(), 0
        for ev in events:
            if isinstance(ev, TokenEvent):
                n_tok += 1
                turns[-1][1] += ev.text
                transcript.value = _chat_html(turns)
                dt = time.perf_counter() - t0
                stats.value = f"{n_tok} tokens · {n_tok / dt:.1f} tokens/s (live, prompt included)"
            else:
                stats.value = (f"{ev.n_generated} tokens · prompt {ev.prompt_tokens_per_s:.1f} tokens/s · "
                               f"generation {ev.eval_tokens_per_s:.1f} tokens/s · stopped: {ev.reason} · "
                               f"sampler {session.sampler.name} · {_context_note(session, shifts)}")

    def on_send(_=None) -> None:
        text, message.value = message.value.strip(), ""
        if text:
            with out:
                run_turn(text)

    def on_reset(_=None) -> None:
        with out:
            session.reset()
            del turns[:]
            if system:
                turns.append(["system", system])
            transcript.value = _chat_html(turns)
            stats.value = "conversation reset"

    send.on_click(on_send)
    reset.on_click(on_reset)
    with warnings.catch_warnings():   # ipywidgets 8 deprecates on_submit, but its frontend still sends
        warnings.simplefilter("ignore", DeprecationWarning)   # "submit" on Enter (and only on Enter)
        message.on_submit(on_send)
    display(w.VBox([transcript, w.HBox([message, send, reset]), stats,
                    w.HBox(list(controls.values())), length, out]))
    for text in script:
        with out:
            run_turn(text)
    return session


__all__ = [
    "CHAT_SAMPLING",
    "HEADLESS_ENV",
    "chat",
    "default_picks",
    "explore",
    "headless_reason",
    "is_headless",
    "make_control",
    "options",
]
