"""`raysearch launch --json`: standard output holds the JSON document alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from raysearch.commands import launch

_PROCESS = textwrap.dedent(
    """
    import os, subprocess, sys
    from raysearch.commands.launch import _document_output

    print("before")
    with _document_output() as document:
        print("python noise")
        os.write(1, b"descriptor noise\\n")
        subprocess.run([sys.executable, "-c", "print('child noise')"], check=True)
        print('{"search": "s"}', file=document, flush=True)
    print("late python noise", flush=True)
    os.write(1, b"late descriptor noise\\n")  # Ray's threads as the process exits
    """
)


def test_in_a_process_of_its_own_everything_else_goes_to_standard_error():
    done = subprocess.run(
        [sys.executable, "-c", _PROCESS], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout == 'before\n{"search": "s"}\n'
    for noise in ("python noise", "descriptor noise", "child noise", "late python noise"):
        assert noise in done.stderr
    assert "late descriptor noise" in done.stderr


def test_under_replaced_streams_python_output_goes_to_standard_error(capsys):
    with launch._document_output() as document:
        print("noise")
        print("{}", file=document)
    captured = capsys.readouterr()
    assert captured.out == "{}\n" and captured.err == "noise\n"
