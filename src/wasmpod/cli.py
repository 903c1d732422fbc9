"""Glue between invoke and the library: a `UserError`, or a mistake in a configuration file, ends
the command in one clean line."""

from __future__ import annotations

import difflib
import functools
import json
import re
import signal
import sys
import threading
from types import TracebackType
from typing import Any, Callable

import invoke
import invoke.config
from invoke.exceptions import UnknownFileType
from invoke.util import yaml  # the YAML library invoke reads its files with (its vendored copy)

from .errors import UserError


def task(*args: Any, **kwargs: Any) -> Any:
    """`invoke.task`, except that a `UserError` ends the task with one line and exit status 1."""

    def decorate(body: Callable[..., Any]) -> invoke.Task:
        @functools.wraps(body)
        def guarded(*call_args: Any, **call_kwargs: Any) -> Any:
            _sigterm_interrupts()
            try:
                return body(*call_args, **call_kwargs)
            except UserError as error:
                raise invoke.Exit(f"error: {error}", code=1) from None
            except OSError as error:
                # A path the task did not check itself (each task names its own paths' faults):
                # still one line, with the path and the system's reason.
                where = f"{error.filename}: " if error.filename else ""
                raise invoke.Exit(f"error: {where}{(error.strerror or str(error)).lower()}", code=1) from None

        # No automatic one-letter flags: `-h` for `--channel` would only confuse.
        kwargs.setdefault("auto_shortflags", False)
        return invoke.task(guarded, **kwargs)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def _sigterm_interrupts() -> None:
    """SIGTERM (`kill`, `timeout`, a cancelled CI job) ends a task as Ctrl-C does, through the
    same clean-up (a pull's temporary file, a run's claims), instead of killing it mid-write."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


# What reading a configuration file (invoke.yaml, `-f FILE`) raises on a user's mistake.
CONFIG_FILE_ERRORS = (UnknownFileType, yaml.YAMLError, json.JSONDecodeError)


def report_config_file_errors() -> None:
    """Invoke reads the configuration files after it has loaded the tasks, outside any task, so
    YAML that does not parse, or `-f` naming a file of a type it does not know, would end the
    command in a traceback: it ends in one line (and exit status 1) instead."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        # Only what invoke raised while reading a configuration file: a JSON error from a task's
        # own state (say, a damaged file of the local node) must not be blamed on invoke.yaml.
        if not issubclass(kind, CONFIG_FILE_ERRORS) or not _raised_in(traceback, invoke.config.__file__):
            previous(kind, error, traceback)
            return
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"error: cannot read the configuration (invoke.yaml or -f FILE): {reason}", file=sys.stderr)

    sys.excepthook = hook


UNKNOWN_TOKEN = re.compile(r"^No idea what '(?P<token>.*)' is!$")


def explain_parse_error(message: str, context: Any, task_names: list[str], core_flags: list[str]) -> str:
    """Invoke's own parse error, made one line that says what to do: the nearest task or flag,
    and where the list is. `context` is the task being parsed when the error came (None before any)."""
    task = getattr(context, "name", None)
    if "needed value" in message and "config (f)" in message and task == "logs":
        # -f is invoke's --config wherever it appears, so `logs -f` cannot mean follow.
        return "error: -f is invoke's own --config flag; follow a workload's output with `invoke logs --follow`"
    unknown = UNKNOWN_TOKEN.match(message)
    if unknown is None:
        return f"error: {message[0].lower()}{message[1:]}" if message else message
    token = unknown["token"]
    if token.startswith("-") and task:
        flags = sorted(name for name in getattr(context, "flags", {}) if name.startswith("--"))
        near = difflib.get_close_matches(token, flags, n=1, cutoff=0.6)
        hint = f": did you mean {near[0]}?" if near else ""
        return f"error: {task} has no flag {token}{hint} (`invoke --help {task}` lists its flags, `invoke --list` the tasks)"
    if token.startswith("-"):
        near = difflib.get_close_matches(token, core_flags, n=1, cutoff=0.6)
        hint = f": did you mean {near[0]}?" if near else ""
        return f"error: invoke has no flag {token}{hint} (`invoke --help` lists them, `invoke --list` the tasks)"
    near = difflib.get_close_matches(token, task_names, n=1, cutoff=0.6)
    hint = f": did you mean {near[0]}?" if near else ""
    return f"error: no task {token!r}{hint} (`invoke --list` lists them)"


def install_parse_error_hints() -> None:
    """Invoke reports an unknown task or flag as "No idea what '--x' is!" from inside
    `Program.run`, which catches the `ParseError` and prints it, so neither a task, the executor
    (chosen after parsing) nor `sys.excepthook` sees it, and users run the stock `invoke`, so no
    `Program` subclass of ours runs either. Its parsing steps after loading tasks.py
    (`parse_tasks`, `parse_cleanup` for `--help TASK`) are wrapped, on the class, when tasks.py
    builds its collection: the error is re-raised with a message naming the nearest task or
    flag, which `Program.run` prints as before (exit status 1)."""
    from invoke import Program
    from invoke.exceptions import ParseError

    if getattr(Program, "_wasmpod_parse_hints", False):
        return
    for step in ("parse_tasks", "parse_cleanup"):
        original = getattr(Program, step)

        def explained(self: Any, *args: Any, _original: Callable[..., Any] = original, _step: str = step,
                      **kwargs: Any) -> Any:
            if _step == "parse_tasks":
                _help_after_a_task_is_help_for_it(self)
            try:
                return _original(self, *args, **kwargs)
            except ParseError as error:
                names = [name for name in self.collection.task_names]
                core = [flag for arg in self.core_args() for flag in (f"--{arg.name.replace('_', '-')}",)]
                raise ParseError(explain_parse_error(str(error), error.context, names, core), error.context) from None

        setattr(Program, step, explained)
    Program._wasmpod_parse_hints = True


def _help_after_a_task_is_help_for_it(program: Any) -> None:
    """`invoke run --help` as `invoke --help run`: invoke's parser would take `--help` as the
    value of the task's first positional argument and then say another one is missing."""
    tokens = list(program.core.unparsed)
    if len(tokens) >= 2 and tokens[0] in program.collection.task_names and any(t in ("--help", "-h") for t in tokens[1:]):
        program.core.unparsed = []
        program.args.help.value = tokens[0]


def _raised_in(traceback: TracebackType | None, source: str) -> bool:
    """Whether any frame of `traceback` runs code of the file `source`."""
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == source:
            return True
        traceback = traceback.tb_next
    return False


def check_config_file_found(config: Any) -> None:
    """Invoke passes over a `-f FILE` that does not exist without a word, so a typo in a
    pipeline's `-f examples/config/acr.yaml` would push and deploy with the defaults. (Invoke
    keeps the path and whether it loaded only in these private attributes.)"""
    path = getattr(config, "_runtime_path", None)
    if path is not None and not getattr(config, "_runtime_found", None):
        raise invoke.Exit(f"error: the configuration file {path} (-f or INVOKE_RUNTIME_CONFIG) does not exist; check the path", code=1)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
