"""The command line's glue: which errors are reported as a configuration file that cannot be read."""

from __future__ import annotations

import json
import sys

import invoke.config
import pytest

from wasmpod.cli import report_config_file_errors


@pytest.fixture
def hook(monkeypatch):
    """`report_config_file_errors` installed over a recorder standing for Python's own hook."""
    passed_on: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, error, traceback: passed_on.append(error))
    report_config_file_errors()
    return passed_on


def test_a_configuration_file_that_does_not_parse_is_one_line(hook, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"deploy": ')
    with pytest.raises(json.JSONDecodeError) as raised:
        invoke.config.Config()._load_json(str(broken))
    sys.excepthook(raised.type, raised.value, raised.tb)
    assert hook == [] and "cannot read the configuration" in capsys.readouterr().err


def test_a_json_error_raised_elsewhere_is_not_blamed_on_the_configuration(hook, capsys):
    with pytest.raises(json.JSONDecodeError) as raised:
        json.loads('{"state": ')
    sys.excepthook(raised.type, raised.value, raised.tb)
    assert hook == [raised.value] and capsys.readouterr().err == ""
