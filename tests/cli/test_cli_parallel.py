"""`bitnet-lab run -np N -f FILE` (batched generation from the CLI) on the shipped default model:
every prompt's output equals `run -p` on it alone, in the file's order; bad uses get one error."""

from __future__ import annotations

import pytest

from bitnet_lab.cli import main

PROMPTS = ["What does statistics.median do?", "Hello", "def f(x):"]


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_parallel_outputs_equal_each_prompt_alone_in_file_order(tmp_path, capsys):
    f = tmp_path / "prompts.txt"
    f.write_text(PROMPTS[0] + "\n\n" + "\n".join(PROMPTS[1:]) + "\n")   # the empty line is skipped
    rc, out, err = _run(capsys, ["run", "-np", "2", "-f", str(f), "-n", "12", "--temp", "0", "-s", "1", "-c", "256",
                                 "--no-display-prompt"])
    assert rc == 0 and "3 sequences" in err and "2 in parallel" in err
    alone = []
    for p in PROMPTS:
        rc1, out1, _ = _run(capsys, ["run", "-p", p, "-n", "12", "--temp", "0", "-s", "1", "-c", "256",
                                     "--no-display-prompt", "--no-escape"])
        assert rc1 == 0
        alone.append(out1)
    assert out == "".join(a + "\n\n" for a in alone)
    rc, shown, _ = _run(capsys, ["run", "-np", "3", "-f", str(f), "-n", "12", "--temp", "0", "-c", "256"])
    assert shown.startswith(f"Input:    {PROMPTS[0]}\nResponse: {alone[0]}\n\n")


@pytest.mark.parametrize("extra,msg", [
    (["-np", "0"], "-np/--parallel must be >= 1, got 0"),
    (["-np", "2", "-p", "x"], "give -f FILE (and no -p)"),
    (["-np", "2", "--context-shift"], "-np has no context shift"),
])
def test_parallel_bad_uses(tmp_path, capsys, extra, msg):
    f = tmp_path / "p.txt"
    f.write_text("Hello\n")
    argv = ["run"] + extra + ([] if "-p" in extra else ["-f", str(f)])
    rc, out, err = _run(capsys, argv)
    assert rc != 0 and msg in err and "Traceback" not in err
