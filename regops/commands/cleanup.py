"""``regops cleanup``: plan, run, enable and audit cleanup policies.

The same bodies back the recipes (``recipes/run_cleanup_policy.py``,
``recipes/enable_cleanup_policies.py``, ``recipes/audit_cleanup_policies.py``):

    regops cleanup plan --project 42 [--policy-override keep_n=5]
    regops cleanup run --project 42 [--user 7] [--execute]
    regops cleanup recover [--project 42]
    regops cleanup enable [--set older_than=30d] [--execute]
    regops cleanup audit
    regops cleanup forecast [--within 24h] [--format table|csv|json] [--plot FILE]

``run --execute`` first settles every delete batch an interrupted run left
(``recover``), then plans: a killed run followed by a new one leaves the
registry as one uninterrupted run would.

Reports go to stdout, one summary line to stderr; exit 0 success, 1 something
failed, 2 bad usage. Nothing is deleted or changed without ``--execute``.
"""

from __future__ import annotations

import argparse
from typing import Any

from regops import scripting
from regops.errors import PolicyError, RegopsError
from regops.policy import LATEST_TAG
from regops.scripting import EXIT_FAILED, EXIT_OK, Outcome, UsageError

RUN_LOCK = "run_cleanup_policy"
ENABLE_LOCK = "enable_cleanup_policies"
AUDIT_LOCK = "audit_cleanup_policies"


# ---------------------------------------------------------------------- run / plan


def add_run_arguments(parser: argparse.ArgumentParser, *, execute: bool = True) -> None:
    """Options of ``run_cleanup_policy``."""
    parser.add_argument("--project", required=True, help="project id or full path")
    parser.add_argument(
        "--user",
        type=scripting.positive_int,
        help="act for this user id: refused unless Developer (30) or above in the project",
    )
    parser.add_argument(
        "--policy-override",
        action="append",
        type=scripting.key_value,
        default=[],
        metavar="KEY=VALUE",
        help="one-off policy change for this run (validated as GitLab would), repeatable",
    )
    if execute:
        parser.add_argument(
            "--execute", action="store_true", help="delete the planned tags (default: plan only)"
        )
        parser.add_argument("--audit-log", help="audit log path (default: under the state dir)")
        parser.add_argument(
            "--max-requests-per-second",
            type=scripting.positive_float,
            help="pace registry requests (default: unpaced)",
        )
        parser.add_argument(
            "--batch-size",
            type=scripting.positive_int,
            default=None,
            help="tags per registry delete batch",
        )


def validate_run(args: argparse.Namespace) -> None:
    """Check the overrides before anything is locked or sent (UsageError: exit 2)."""
    args.overrides = scripting.policy_attributes(args.policy_override, "--policy-override")


def run_body(args: argparse.Namespace, connection: Any) -> Outcome:
    """Plan the project's policy; with ``--execute`` apply it (plan and results: -q hides)."""
    from regops.models import Project, User
    from regops.models.policy import actor_for
    from regops.ops.apply import DEFAULT_BATCH_SIZE

    execute = getattr(args, "execute", False)
    project = Project.find(_project_ref(args.project), connection=connection)
    user = None
    if args.user:
        user = User.find(args.user, connection=connection)
        user.check_cleanup_permission(project)
    actor = actor_for(user)
    if execute:
        recovery = _recover_pending(args, connection, actor)
        if recovery is not None:
            return recovery
    try:
        plan = _plan(args, project, connection, actor if execute else None)
    except PolicyError as exc:  # the stored policy is invalid: GitLab's run fails too
        return Outcome(EXIT_FAILED, f"project {project.id}: invalid policy: {exc}")
    scripting.inform(args, plan)
    if not execute:
        return Outcome(EXIT_OK, f"dry run, nothing deleted: {plan.summary()}")
    if plan.placeholder_tags:
        return Outcome(EXIT_FAILED, f"project {project.id}: tags still on a regops placeholder")
    result = plan.apply(
        connection,
        user=user,
        audit_path=args.audit_log,
        max_requests_per_second=args.max_requests_per_second,
        batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
    )
    scripting.inform(args, result)
    summary = f"project {project.id}: {result.summary()}"
    return Outcome(EXIT_OK if result.ok else EXIT_FAILED, summary)


def _recover_pending(args: argparse.Namespace, connection: Any, actor: str) -> Outcome | None:
    """Settle what interrupted runs left; an Outcome (exit 1) when something stays unsettled."""
    from regops.ops.recovery import recover_pending

    report = recover_pending(_registry(connection), actor=actor)
    if report.batches:
        scripting.inform(args, report)
    if not report.ok:
        return Outcome(EXIT_FAILED, f"not planning: {report.summary()}")
    return None


def _plan(args: argparse.Namespace, project: Any, connection: Any, recover_as: str | None) -> Any:
    """The project's plan; when it finds tags on placeholders and ``recover_as`` is given,
    settle their batches (from the audit logs) and plan once more."""
    from regops.models import Project
    from regops.ops.recovery import recover_placeholders

    overrides = getattr(args, "overrides", None)
    plan = project.container_expiration_policy.plan(project, overrides=overrides)
    if not plan.placeholder_tags or recover_as is None:
        return plan
    for repository_plan in plan:
        if repository_plan.placeholders:
            report = recover_placeholders(
                _registry(connection),
                repository_plan.repository,
                repository_plan.placeholders,
                actor=recover_as,
            )
            scripting.inform(args, report)
    fresh = Project.find(project.id, connection=connection)
    return fresh.container_expiration_policy.plan(fresh, overrides=overrides)


def _registry(connection: Any) -> Any:
    if connection.registry is None:
        raise UsageError("deleting tags needs the registry: set REGOPS_REGISTRY_URL")
    return connection.registry


def recover_body(args: argparse.Namespace, connection: Any) -> Outcome:
    """Settle every interrupted delete batch (journal), and with ``--project`` those a
    plan of that project finds on placeholders (audit logs)."""
    from regops.models import Project
    from regops.ops.apply import default_actor
    from regops.ops.recovery import recover_pending

    actor = default_actor()
    report = recover_pending(_registry(connection), actor=actor)
    scripting.inform(args, report)
    ok, summary = report.ok, report.summary()
    for ref in args.project:
        project = Project.find(_project_ref(ref), connection=connection)
        plan = _plan(args, project, connection, actor)
        if plan.placeholder_tags:
            ok = False
            summary += f"; project {project.id}: still on placeholders after recovery"
    return Outcome(EXIT_OK if ok else EXIT_FAILED, summary)


def _project_ref(text: str) -> int | str:
    return int(text) if text.strip().isdigit() else text.strip()


# ---------------------------------------------------------------------- enable


def add_enable_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        type=scripting.key_value,
        default=[],
        metavar="KEY=VALUE",
        help="policy attributes to set along with enabled=true (validated), repeatable",
    )
    parser.add_argument(
        "--execute", action="store_true", help="enable the policies (default: list only)"
    )
    scripting.add_scope_option(parser)


def validate_enable(args: argparse.Namespace) -> None:
    changes = scripting.policy_attributes(args.set, "--set")
    if changes.get("enabled") is False:
        raise UsageError("--set: enabled=false contradicts enabling policies")
    args.changes = {**changes, "enabled": True}


def enable_body(args: argparse.Namespace, connection: Any) -> Outcome:
    """Print ``id,full name`` of projects with repositories and a disabled policy; enable them."""
    from regops.models import ExpirationPolicy

    found, enabled, failed = 0, 0, []
    reach = scripting.check_reach(args, connection, "enabling policies across the instance")
    query = ExpirationPolicy.where(enabled=False, connection=connection).with_repositories()
    for policy in query:
        project = policy.project
        found += 1
        print(f"{project.id},{_full_name(project)}", flush=True)
        if not args.execute:
            continue
        try:
            policy.update(**args.changes)  # re-reads the project and checks every value took
        except RegopsError as exc:
            failed.append(project.id)
            print(f"enable_cleanup_policies: project {project.id}: {exc}", file=_stderr())
            continue
        enabled += 1
    if not args.execute:
        dry = f"{found} projects to enable (dry run; use --execute)"
        return Outcome(EXIT_OK, f"{dry}; {reach.note}" if reach.note else dry)
    summary = f"{found} projects found, {enabled} enabled, {len(failed)} failed"
    if reach.note:
        summary += f"; {reach.note}"
    return Outcome(EXIT_FAILED if failed else EXIT_OK, summary)


def _full_name(project: Any) -> str:
    """GitLab's Project#full_name (``Group / Project``), else the full path."""
    return project.get("name_with_namespace") or project.full_path


def _stderr() -> Any:
    import sys

    return sys.stderr


# ---------------------------------------------------------------------- audit


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    """``audit_cleanup_policies``: the common options and ``--scope``."""
    scripting.add_scope_option(parser)


def audit_body(args: argparse.Namespace, connection: Any) -> Outcome:
    """CSV lines ``project_id,project path,repository,problem`` for risky policies."""
    from regops.models import ExpirationPolicy
    from regops.policy import compile_gitlab_regex

    checked, findings, failed = 0, 0, 0
    reach = scripting.check_reach(args, connection, "an audit of the instance's policies")
    for policy in ExpirationPolicy.all(connection=connection):
        checked += 1
        project = policy.project
        problems = []
        for field in ("name_regex", "name_regex_keep"):
            try:
                compile_gitlab_regex(policy.get(field), field)
            except PolicyError as exc:
                problems.append(("", f"invalid {exc}"))  # "<field>: <RE2 error>"
        if not problems and policy.get("enabled"):
            try:
                problems.extend(_deletes_all_but_latest(policy, project))
            except RegopsError as exc:
                failed += 1
                print(f"audit_cleanup_policies: project {project.id}: {exc}", file=_stderr())
        for repository, problem in problems:
            findings += 1
            print(f"{project.id},{project.full_path},{repository},{_csv(problem)}", flush=True)
    summary = f"{checked} policies checked, {findings} findings, {failed} projects unreadable"
    if reach.note:
        summary += f"; {reach.note}"
    return Outcome(EXIT_FAILED if failed else EXIT_OK, summary)


def _deletes_all_but_latest(policy: Any, project: Any) -> list[tuple[str, str]]:
    """Repositories where a run of ``policy`` would leave nothing but ``latest``."""
    problems = []
    for plan in policy.plan(project):
        kept = set(plan.kept)
        if plan.deleted_size and kept <= {LATEST_TAG}:
            problems.append(
                (
                    plan.repository or "",
                    f"enabled policy would delete all {plan.deleted_size} tags except latest",
                )
            )
    return problems


def _csv(text: str) -> str:
    """A CSV field: quoted when it holds a comma or a quote."""
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""').replace("\n", " ") + '"'
    return text


# ---------------------------------------------------------------------- forecast

FORECAST_LOCK = "cleanup_forecast"
FORECAST_FORMATS = ("table", "csv", "json")


def add_forecast_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``regops cleanup forecast``."""
    from regops.ops.defaults import FORECAST_WORKERS as DEFAULT_WORKERS

    parser.add_argument("--format", choices=FORECAST_FORMATS, default="table", help="(table)")
    parser.add_argument(
        "--within",
        default="24h",
        metavar="DURATION",
        help="runs due within this long count as tonight's (default 24h)",
    )
    parser.add_argument("--plot", metavar="FILE", help="draw bytes and tags by project (.png/.svg)")
    parser.add_argument(
        "--workers",
        type=scripting.positive_int,
        default=DEFAULT_WORKERS,
        help=f"projects planned at once (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--max-list-size",
        type=int,
        metavar="N",
        help="GitLab's tag limit per run (default: its application setting, else 200)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def validate_forecast(args: argparse.Namespace) -> None:
    from regops.durations import parse_duration

    try:
        args.horizon = parse_duration(args.within, "--within")
    except RegopsError as exc:
        raise UsageError(str(exc)) from None
    if args.max_list_size is not None and args.max_list_size < 0:
        raise UsageError(f"--max-list-size: expected a number >= 0, got {args.max_list_size}")
    if args.plot and not args.plot.lower().endswith((".png", ".svg")):
        raise UsageError(f"--plot: expected a .png or .svg file name, got {args.plot!r}")


def forecast_body(args: argparse.Namespace, connection: Any) -> Outcome:
    """Plan every enabled policy now: the table (or CSV, JSON) on stdout, the chart to a file."""
    import sys

    from regops.models import ExpirationPolicy

    query = ExpirationPolicy.where(enabled=True, connection=connection)
    result = query.forecast(
        horizon=args.horizon,
        max_list_size=args.max_list_size,
        workers=args.workers,
        progress=sys.stderr.isatty() and not args.no_progress,
    )
    sys.stdout.write(result.render(args.format))
    if args.plot:
        result.plot().save(args.plot)
    return Outcome(EXIT_OK if result.ok else EXIT_FAILED, result.summary())


# ---------------------------------------------------------------------- command


def register(subparsers: Any) -> None:
    """``regops cleanup plan|run|enable|audit``."""
    parser = subparsers.add_parser("cleanup", help="plan, run, enable and audit cleanup policies")
    verbs = parser.add_subparsers(dest="cleanup_command", metavar="VERB")
    plan = verbs.add_parser("plan", help="what the project's policy would delete (nothing is)")
    add_run_arguments(plan, execute=False)
    plan.set_defaults(func=_command(RUN_LOCK, run_body, validate_run, lock=False))
    run = verbs.add_parser("run", help="plan and, with --execute, delete (audited)")
    add_run_arguments(run)
    run.set_defaults(func=_command(RUN_LOCK, run_body, validate_run))
    recover = verbs.add_parser(
        "recover", help="settle delete batches an interrupted run left (roll back or finish)"
    )
    recover.add_argument(
        "--project",
        action="append",
        default=[],
        help="also scan this project for tags on regops placeholders (repeatable)",
    )
    recover.set_defaults(func=_command(RUN_LOCK, recover_body, None))
    enable = verbs.add_parser("enable", help="enable disabled policies of projects with images")
    add_enable_arguments(enable)
    enable.set_defaults(func=_command(ENABLE_LOCK, enable_body, validate_enable))
    audit = verbs.add_parser("audit", help="invalid regexes and all-but-latest policies")
    add_audit_arguments(audit)
    audit.set_defaults(func=_command(AUDIT_LOCK, audit_body, None))
    forecast = verbs.add_parser(
        "forecast", help="what every enabled policy's next run deletes (nothing is deleted)"
    )
    add_forecast_arguments(forecast)
    forecast.set_defaults(
        func=_command(FORECAST_LOCK, forecast_body, validate_forecast, lock=False)
    )
    for verb in (plan, run, recover, enable, audit, forecast):
        scripting.add_common_options(verb)
    parser.set_defaults(func=lambda args: parser.print_help() or scripting.EXIT_USAGE)


def _command(name: str, body: Any, validate: Any, *, lock: bool = True) -> Any:
    """A ``func`` for regops.cli running ``body`` like a recipe (args already parsed)."""

    def func(args: argparse.Namespace) -> int:
        return scripting.run_parsed(name, args, body, lock=lock, validate=validate)

    return func
