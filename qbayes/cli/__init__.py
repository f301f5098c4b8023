"""The ``qbayes`` command line. Subcommands are imported only when run, so ``qbayes db``
never imports PyMC and nothing but ``qbayes collect`` imports torch."""

from __future__ import annotations

import sys

import click

from qbayes import __version__
from qbayes.errors import QBayesError
from qbayes.registry import Registry

# command name -> "module:attribute", imported only when the command runs
COMMANDS: Registry[click.Command] = Registry("command")
COMMANDS.register_lazy("db", "qbayes.cli.db:db")
COMMANDS.register_lazy("fit", "qbayes.cli.fit:fit")
COMMANDS.register_lazy("fit-accuracy", "qbayes.cli.accuracy:fit_accuracy")
COMMANDS.register_lazy("validate", "qbayes.cli.validate:validate")
COMMANDS.register_lazy("predict", "qbayes.cli.predict:predict")
COMMANDS.register_lazy("choose", "qbayes.cli.choose:choose")
COMMANDS.register_lazy("compare", "qbayes.cli.compare:compare")
COMMANDS.register_lazy("suggest", "qbayes.cli.suggest:suggest")
COMMANDS.register_lazy("report", "qbayes.cli.report:report")
COMMANDS.register_lazy("collect", "qbayes.cli.collect:collect")
COMMANDS.register_lazy("zoo", "qbayes.cli.zoo:zoo")


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [n for n in COMMANDS.names() if COMMANDS.available(n)]

    def get_command(self, ctx, name):
        return COMMANDS.get(name) if COMMANDS.available(name) else None

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
