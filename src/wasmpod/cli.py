"""Glue between invoke and the library: tasks that turn `UserError` into one clean line."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import invoke

from .errors import UserError


def task(*args: Any, **kwargs: Any) -> Any:
    """`invoke.task`, except that a `UserError` ends the task with one line and exit status 1."""

    def decorate(body: Callable[..., Any]) -> invoke.Task:
        @functools.wraps(body)
        def guarded(*call_args: Any, **call_kwargs: Any) -> Any:
            try:
                return body(*call_args, **call_kwargs)
            except UserError as error:
                raise invoke.Exit(f"error: {error}", code=1) from None

        # No automatic one-letter flags: `-h` for `--channel` would only confuse.
        kwargs.setdefault("auto_shortflags", False)
        return invoke.task(guarded, **kwargs)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
