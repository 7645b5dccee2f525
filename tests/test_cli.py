"""The `flamboyance` console command: one entry point, subcommands owned by the subpackages."""

import importlib
import subprocess
import sys

import pytest
from flamboyance.cli import _OWNERS, _SUMMARIES, build_parser


def test_every_subcommand_has_an_owner_with_a_command_table(capsys):
    assert set(_OWNERS) == set(_SUMMARIES) == {"extract", "crawl", "sample-web", "etl", "stats", "pretrain-lm",
                                                   "train", "eval", "decontaminate"}
    for name, owner in _OWNERS.items():
        help_text, add_arguments, run = importlib.import_module(owner).COMMANDS[name]
        assert isinstance(help_text, str) and help_text and callable(add_arguments) and callable(run)
        with pytest.raises(SystemExit) as exit_info:
            build_parser(name).parse_args([name, "--help"])  # the owner's options are declared
        assert exit_info.value.code == 0
        assert f"usage: flamboyance {name}" in capsys.readouterr().out


def test_help_lists_commands_without_importing_heavy_packages():
    code = ("import sys, contextlib, io\n"
            "from flamboyance.cli import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n        main(['--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
            "assert 'etl' in out.getvalue() and 'sample-web' in out.getvalue()\n"
            "heavy = [m for m in ('torch', 'ray', 'apache_beam') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
