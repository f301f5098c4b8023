"""The ``qbayes`` command line. Subcommands are imported only when run, so ``qbayes db``
never imports PyMC and nothing but ``qbayes collect`` imports torch."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from qbayes import __version__
from qbayes.errors import QBayesError

# command name -> "module:attribute"
COMMANDS = {
    "db": "qbayes.cli.db:db",
    "fit": "qbayes.cli.fit:fit",
    "validate": "qbayes.cli.validate:validate",
    "predict": "qbayes.cli.predict:predict",
    "choose": "qbayes.cli.choose:choose",
    "suggest": "qbayes.cli.suggest:suggest",
    "report": "qbayes.cli.report:report",
    "collect": "qbayes.cli.collect:collect",
    "zoo": "qbayes.cli.zoo:zoo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(n for n, target in COMMANDS.items() if importlib.util.find_spec(target.split(":")[0]))

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None or importlib.util.find_spec(target.split(":")[0]) is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            from qbayes.errors import suggest

            raise click.UsageError(
                f"no such command '{args[0]}'{suggest(args[0], self.list_commands(ctx))}", ctx
            ) from None


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="qbayes")
def cli():
    """Predict LLM quality loss under weight quantization, with calibrated uncertainty."""


def main(argv=None):
    """Entry point: user errors print one clear message and exit 2."""
    try:
        cli.main(args=argv, prog_name="qbayes", standalone_mode=False)
    except QBayesError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
