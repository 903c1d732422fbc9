"""One flag for a whole chain: `invoke build push deploy --registry R` pushes to R and deploys from R.

Invoke gives a flag only to the task it follows. This Executor sees every parsed task of one
command line before any runs, and hands a flag given to one of them to every other task of the
chain that takes a flag of that name and was not given it. Selected by `tasks.executor_class`.
It is also where the command line as a whole is checked: a `-f FILE` that is not there.
"""

from __future__ import annotations

from typing import Any

from invoke import Executor, Exit
from invoke.parser import ParserContext

from .cli import check_config_file_found


def share_flags(contexts: list[ParserContext]) -> None:
    """Copies each explicitly given flag to the tasks that take it but were not given it."""
    given: dict[str, Any] = {}
    for context in contexts:
        for name, argument in context.args.items():
            if not argument.got_value or name != argument.name:
                continue
            if name in given and given[name] != argument.value:
                raise Exit(f"error: --{name.replace('_', '-')} is given twice in this chain with different values "
                           f"({given[name]!r} and {argument.value!r}): give it once", code=2)
            given[name] = argument.value
    for context in contexts:
        for name, value in given.items():
            argument = context.args.get(name)
            if argument is not None and not argument.got_value:
                argument.set_value(value, cast=False)


class ChainExecutor(Executor):
    def execute(self, *tasks: Any) -> Any:
        check_config_file_found(self.config)
        share_flags([task for task in tasks if isinstance(task, ParserContext)])
        return super().execute(*tasks)
