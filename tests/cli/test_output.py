"""CLI output helpers: library warnings become one-line console notes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from genprint.cli.output import warnings_as_notes


def test_warnings_become_notes_once_each(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings_as_notes():
        warnings.warn("the model does not know real", stacklevel=1)
        warnings.warn("the model does not know real", stacklevel=1)
        warnings.warn("2 test file(s) could not be read", stacklevel=1)
    err = capsys.readouterr().err
    assert err.count("note: the model does not know real") == 1
    assert "note: 2 test file(s) could not be read" in err
    assert "UserWarning" not in err and ".py:" not in err


def test_other_libraries_deprecation_notices_are_not_notes(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A library's notice to its own users (Ray's ``DeprecationWarning`` about its settings) is
    not genprint's to print; genprint's own warnings of any kind are."""
    import genprint.cli.output as ours

    with warnings_as_notes():
        warnings.warn_explicit("`use_push_based_shuffle` is deprecated!", DeprecationWarning,
                               str(Path("site-packages", "ray", "data", "context.py")), 1286)
        warnings.warn_explicit("the old option is deprecated", FutureWarning, ours.__file__, 1)
        warnings.warn_explicit("a third-party user warning", UserWarning,
                               str(Path("site-packages", "other", "mod.py")), 1)
        clone_venv = Path("clone", "genprint", ".venv", "site-packages", "ray", "x.py")
        warnings.warn_explicit("`old_knob` is deprecated!", PendingDeprecationWarning,
                               str(clone_venv), 1)  # a venv inside a clone named genprint
    err = capsys.readouterr().err
    assert "use_push_based_shuffle" not in err and "old_knob" not in err
    assert "note: the old option is deprecated" in err
    assert "note: a third-party user warning" in err


def test_notes_are_printed_when_the_block_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), warnings_as_notes():
        warnings.warn("partial result", stacklevel=1)
        raise RuntimeError("boom")
    assert "note: partial result" in capsys.readouterr().err


def test_zoo_list_keeps_names_whole_on_a_narrow_terminal() -> None:
    from typer.testing import CliRunner

    from genprint.cli.app import app
    from genprint.world import zoo

    names = [c["name"] for c in zoo.list_generators(trained_only=True)]
    if not names:
        import pytest

        pytest.skip("no trained zoo generators in this checkout")
    out = CliRunner().invoke(app, ["zoo", "list"], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    assert all(name in out.output for name in names)


def test_help_reflows_docstrings_and_lists_commands_by_their_first_sentence() -> None:
    from typer.testing import CliRunner

    from genprint.cli.app import app

    runner = CliRunner()
    listing = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "80"})
    assert listing.exit_code == 0, listing.output
    # the docstring breaks after "reference"; the listing wraps at the terminal's width instead
    assert "metric-learning loss, reference points per source" in " ".join(
        line.strip("│ ") for line in listing.output.splitlines())
    assert not any(line.rstrip("│ ").endswith("reference") for line in listing.output.splitlines())
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "without retraining (method `metric`)." in top.output
    assert "leave-one-out" not in top.output  # only the first sentence is listed
    page = runner.invoke(app, ["enroll", "--help"], env={"COLUMNS": "200"})
    assert "leave-one-out self-check (3–30 images) says how many of the images" in page.output


def test_a_name_with_a_newline_stays_on_one_line_of_a_table() -> None:
    from genprint.cli.output import esc_one_line

    assert esc_one_line("new\nline\t[red].png") == "new\\nline\\t\\[red].png"
