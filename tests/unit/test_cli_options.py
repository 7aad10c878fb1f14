"""The CLI's options come from Settings: one default, one env-var rule, one range, checked on every command."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from bxbatch.cli import app
from bxbatch.cli.boundary import error_boundary
from bxbatch.cli.options import EVERY, flag_of, option_default, parameter_name
from bxbatch.cli.signals import drive
from bxbatch.errors import ExitCode, RollbackRefused, UsageError
from bxbatch.settings import Settings

CLI_DIR = Path(__file__).parents[2] / "src" / "bxbatch" / "cli"
FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
BY_PARAMETER = {parameter_name(name): name for name in EVERY}  # typer parameter -> Settings field

# Options of one command that are not Settings: their env var is BXBATCH_<COMMAND>_<FLAG>. The one
# exception: `report --html` reads the report path that `run --report` reads.
SHARED_ENV = {("report", "--html"): "BXBATCH_REPORT"}


def _commands() -> dict[str, Any]:
    group = typer.main.get_command(app)
    ctx = typer.Context(group)  # type: ignore[arg-type]
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}  # type: ignore[attr-defined]


COMMANDS = _commands()


def _options() -> list[tuple[str, Any]]:
    return [(name, p) for name, cmd in COMMANDS.items() for p in cmd.params if p.param_type_name == "option"]


def test_run_and_resume_take_every_settings_option() -> None:
    assert EVERY, "no Settings field carries a flag"
    for command in ("run", "resume"):
        names = {p.name for p in COMMANDS[command].params}
        assert {parameter_name(n) for n in EVERY} <= names, command


@pytest.mark.parametrize(("command", "param"), _options(), ids=lambda x: x if isinstance(x, str) else x.name)
def test_an_option_named_like_a_settings_field_is_that_field(command: str, param: Any) -> None:
    """Default, env var, range and flag of the option are the Settings field's: written once, in settings.py."""
    field = BY_PARAMETER.get(param.name)
    if field is None:
        assert param.name not in FIELDS, f"{command} --{param.name}: a Settings field made into an option by hand"
        return
    spec = flag_of(field)
    assert (
        param.default == option_default(field) == (not FIELDS[field].default if spec.negated else FIELDS[field].default)
    )
    assert param.envvar == spec.envvar
    assert param.opts[0] == spec.name.split("/")[0]
    assert (getattr(param, "min", None), getattr(param, "max", None)) == (spec.min, spec.max)
    assert param.show_default == spec.show_default


@pytest.mark.parametrize(("command", "param"), _options(), ids=lambda x: x if isinstance(x, str) else x.name)
def test_env_vars_follow_one_rule(command: str, param: Any) -> None:
    flag = param.opts[0]
    if param.name in BY_PARAMETER:
        assert param.envvar == "BXBATCH_" + flag.removeprefix("--").upper().replace("-", "_")
    elif param.envvar is not None:
        expected = f"BXBATCH_{command}_{flag.removeprefix('--')}".upper().replace("-", "_")
        assert param.envvar == SHARED_ENV.get((command, flag), expected)


def test_one_env_var_is_one_setting_across_commands() -> None:
    meaning: dict[str, set[str]] = {}
    for command, param in _options():
        if param.envvar:
            meaning.setdefault(param.envvar, set()).add(BY_PARAMETER.get(param.name, f"{command} {param.name}"))
    shared = {env: names for env, names in meaning.items() if len(names) > 1}
    assert shared == {"BXBATCH_REPORT": {"report_path", "report html_path"}}


def test_no_command_module_defines_a_settings_option_itself() -> None:
    """A second definition of an option (its parameter or its env var spelled out in cli/) fails here, even
    with the same default."""
    env_vars = {flag_of(name).envvar for name in EVERY} - set(SHARED_ENV.values())
    for path in sorted(CLI_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in env_vars, f"{path.name}:{node.lineno} spells out {node.value}"
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "id", None) == "command" for d in node.decorator_list
            ):
                taken = {a.arg for a in node.args.args + node.args.kwonlyargs}
                assert not taken & (set(FIELDS) | set(BY_PARAMETER)), f"{path.name}: {node.name} takes {taken}"


@pytest.mark.parametrize("name", [n for n in EVERY if flag_of(n).min is not None])
def test_validate_refuses_what_the_flag_refuses(name: str) -> None:
    """Settings.validate() checks the flag's range too, for library callers and for a joiner's stored settings."""
    spec = flag_of(name)
    assert spec.min is not None
    below = spec.min - 1 if isinstance(FIELDS[name].default, int) else spec.min - max(spec.min / 2, 0.001)
    with pytest.raises(UsageError, match=spec.name):
        Settings(**{name: below}).validate()
    if spec.max is not None:
        with pytest.raises(UsageError, match=spec.name):
            Settings(**{name: spec.max + 1}).validate()


def test_settings_defaults_pass_their_own_checks() -> None:
    Settings().validate()
    with pytest.raises(UsageError, match="auto, console or json"):
        Settings(log_format="xml").validate()  # type: ignore[arg-type]


def test_help_shows_panels_env_vars_and_byte_defaults_in_mib() -> None:
    text = CliRunner().invoke(app, ["run", "--help"], terminal_width=100).output
    panels = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert panels == [
        "Connection:",
        "Output:",
        "Chunking:",
        "Timeouts:",
        "Indexes, constraints, triggers:",
        "Options:",
        "Live safety:",
        "Backup and preflight:",
        "Observability:",
    ]
    assert "BXBATCH_MAX_REPLICATION_LAG_BYTES; default: 64.0" in " ".join(text.split())
    assert "67108864" not in text


def _through_boundary_of(body: Callable[[], object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(typer.Exit) as left, error_boundary(debug=False):
        body()
    return left.value.exit_code, capsys.readouterr().err


def _through_boundary(exc: BaseException, debug: bool, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(typer.Exit) as left, error_boundary(debug=debug):
        raise exc
    return left.value.exit_code, capsys.readouterr().err


def test_the_boundary_maps_any_exception_to_one_line_and_an_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """A BxbatchError leaves with its own exit code, anything else as "internal error" (exit 1); the
    traceback only under --debug."""
    for debug in (False, True):
        code, err = _through_boundary(ZeroDivisionError("boom"), debug, capsys)
        assert code == ExitCode.FAILURE
        lines = [line for line in err.splitlines() if line.startswith("bxbatch: error:")]
        assert lines == [
            "bxbatch: error: internal error: ZeroDivisionError: boom (re-run with --debug for the traceback)"
        ]
        assert ("Traceback" in err) is debug
        code, err = _through_boundary(RollbackRefused("not confirmed", hint="type the name"), debug, capsys)
        assert code == ExitCode.ROLLBACK_REFUSED
        assert err.splitlines()[-1] == "bxbatch: error: not confirmed (type the name)"
        assert ("Traceback" in err) is debug


def test_a_ctrl_c_while_a_command_works_is_resumable(capsys: pytest.CaptureFixture[str]) -> None:
    async def interrupted() -> None:
        raise KeyboardInterrupt

    code, err = _through_boundary_of(lambda: drive(interrupted, 1.0), capsys)
    assert code == ExitCode.RESUMABLE
    assert err == "bxbatch: error: interrupted; the ledger is consistent: run `bxbatch resume` to continue\n"


def test_typer_exits_pass_the_boundary_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _through_boundary(typer.Exit(21), False, capsys)  # `status --check`
    assert code == 21 and err == ""


def test_a_usage_error_in_a_command_body_is_exit_2_before_connecting() -> None:
    result = CliRunner().invoke(app, ["hold-before", "nowhere", "--dsn", "postgresql://u@127.0.0.1:1/db"])
    assert result.exit_code == ExitCode.USAGE
    assert "bxbatch: error: no phase 'nowhere' to hold before (one of " in result.output
