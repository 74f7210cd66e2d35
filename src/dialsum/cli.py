"""The `dialsum` command line. Each command is a few lines that call the modules.

    dialsum --help
"""

from __future__ import annotations

import sys

import click
import typer

from dialsum.errors import DialsumError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fine-tune, evaluate and compare seq2seq models for Korean dialogue summarization.",
)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except DialsumError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except (click.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
