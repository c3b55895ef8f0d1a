"""HoopShellOperator: BashOperator, run by the gateway instead of the worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSkipException,
    context_to_airflow_vars,
)
from airflow.sdk import BaseOperator

from airflow_hoop.defaults import DEFAULT_HOOP_CONN_ID, DEFAULT_POLL_INTERVAL
from airflow_hoop.errors import BadRequestError, ConfigError
from airflow_hoop.operators.approval_mixin import RequiresApprovalMixin, notifier_list
from airflow_hoop.operators.step_commitment import StepCommitmentMixin
from airflow_hoop.wire.identity import COMMITMENT_FIELD

if TYPE_CHECKING:
    from airflow_hoop.operators.approval_request import ApprovalCommand
    from airflow_hoop.task.step_session import GovernedStep

# The gateway client, the hook and the step session are imported when the task runs, not when
# its DAG file is parsed (airflow_hoop/defaults.py says why).

log = logging.getLogger(__name__)

#: A command that ends within this answers in one round trip; a longer one is streamed.
SYNC_SECONDS = 1.0
#: on_kill runs in a signal handler: it must return even if a lock it needs is held.
_KILL_WAIT_SECONDS = 10.0


class HoopShellOperator(StepCommitmentMixin, RequiresApprovalMixin, BaseOperator):
    """Run a Bash script on the Hoop gateway's shell connection, as this step, with a record.

    A drop-in replacement for ``BashOperator``: ``bash_command`` (a string or a templated
    ``.sh``/``.bash`` file), ``env``, ``append_env``, ``output_encoding``,
    ``skip_on_exit_code``, ``cwd`` and ``output_processor`` behave the same, the last line of
    output is pushed to XCom, a non-zero exit fails the task, a skip code skips it and
    ``on_kill`` stops the command. ``connection`` names a ``custom`` connection of the gateway
    (e.g. ``ops_shell``); ``hoop_conn_id`` the ``hoop`` connection (gateway URL and Vault).

    Where it differs, because the command runs on the gateway host, never on the worker:

    * the environment is the connection's (set by the gateway's owner), plus ``env``, plus the
      ``AIRFLOW_CTX_*`` variables; the worker's environment is never sent, so ``append_env``
      changes nothing; a variable the connection defines cannot be overridden;
    * ``cwd`` is a directory on the gateway host, inside the connection's ``cwd_roots``; the
      gateway checks that it exists and is a directory. Without it the command runs in a fresh
      directory that is removed afterwards;
    * the script reaches ``bash`` on stdin (hoop's shape): a command that reads stdin reads
      the rest of the script, so give it ``< /dev/null``;
    * secret values (the step's database password) are masked in the output.

    ``requires_approval=True`` (as on ``HoopPostgresOperator``): the task first asks the
    gateway for a review of its rendered script, bound to this task instance and try, defers
    until a person decides, then runs it; ``approval_justification`` (templated),
    ``approval_timeout``, ``approval_poll_interval`` and ``approval_notifiers`` likewise. The
    approval binds the script, ``cwd`` and environment as sent (docs/approvals.md).
    """

    template_fields: Sequence[str] = (
        "bash_command",
        "env",
        "cwd",
        "approval_justification",
        COMMITMENT_FIELD,
    )
    template_fields_renderers = {"bash_command": "bash", "env": "json"}
    template_ext: Sequence[str] = (".sh", ".bash")
    ui_color = "#e4ecf0"

    def __init__(
        self,
        *,
        connection: str,
        bash_command: str,
        env: dict[str, str] | None = None,
        append_env: bool = False,
        output_encoding: str = "utf-8",
        skip_on_exit_code: int | Container[int] | None = 99,
        cwd: str | None = None,
        output_processor: Callable[[str], Any] = lambda result: result,
        hoop_conn_id: str = DEFAULT_HOOP_CONN_ID,
        requires_approval: bool = False,
        approval_justification: str = "",
        approval_timeout: float = 24 * 3600.0,
        approval_poll_interval: float = DEFAULT_POLL_INTERVAL,
        approval_notifiers: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.requires_approval = requires_approval
        self.approval_justification = approval_justification
        self.approval_timeout = approval_timeout
        self.approval_poll_interval = approval_poll_interval
        self.approval_hoop_conn_id = hoop_conn_id
        self.approval_notifiers = notifier_list(approval_notifiers)
        self.connection = connection
        self.bash_command = bash_command
        self.env = env
        self.append_env = append_env
        self.output_encoding = output_encoding
        self.skip_on_exit_code = (
            skip_on_exit_code
            if isinstance(skip_on_exit_code, Container)
            else [skip_on_exit_code]
            if skip_on_exit_code is not None
            else []
        )
        self.cwd = cwd
        self.output_processor = output_processor
        self.hoop_conn_id = hoop_conn_id

    def get_env(self, context: Any) -> dict[str, str]:
        """``env`` plus the ``AIRFLOW_CTX_*`` variables, as BashOperator adds them."""
        env = {str(k): str(v) for k, v in (self.env or {}).items()}
        env.update(context_to_airflow_vars(context, in_env_var_format=True))
        return env

    def approval_command(self, context: Any) -> ApprovalCommand:
        """The rendered script as one statement, bound (as the gateway binds it) to the
        ``cwd`` and environment ``execute`` sends: values enter as digests only."""
        from airflow_hoop.ledger.commands import shell_context
        from airflow_hoop.operators.approval_request import ApprovalCommand
        from airflow_hoop.wire.reviews import StatementIn

        asking = getattr(context.get("task"), "task_id", self.task_id)
        if asking != self.task_id:
            # The environment names the running task and try (AIRFLOW_CTX_*): another task
            # would compute another one, and the gateway would refuse the approval.
            raise ConfigError(
                f"task {asking} asks an approval of shell task {self.task_id}, whose "
                "environment only that task knows",
                "set requires_approval=True on the HoopShellOperator instead of a sensor",
            )
        env = [(name, "env", value) for name, value in self.get_env(context).items()]
        statement = StatementIn(
            script=str(self.bash_command), parameters=shell_context([], self.cwd, env)
        )
        return ApprovalCommand(
            connection=self.connection, statements=[statement], hoop_conn_id=self.hoop_conn_id
        )

    def execute(self, context: Any) -> Any:
        self.wait_for_own_approval(context, resume_method="execute_approved")
        return self._run(context)

    def execute_approved(self, context: Any, event: dict[str, Any]) -> Any:
        """Resumed after the review was decided: run the approved script (or fail)."""
        self.approval_granted(event, context, resume_method="execute_approved")
        return self._run(context)

    def _run(self, context: Any) -> Any:
        from airflow_hoop.client.shell import run_shell
        from airflow_hoop.hooks.hoop import HoopHook
        from airflow_hoop.task.identity import StepIdentity
        from airflow_hoop.task.step_session import end_all_steps
        from airflow_hoop.wire.env import encode_env_vars
        from airflow_hoop.wire.sessions import ExecExtension, ExecRequest

        step = HoopHook(self.hoop_conn_id).get_step(context)
        identity = StepIdentity.from_context(context)
        request = ExecRequest(
            connection=self.connection,
            script=str(self.bash_command),
            env_vars=encode_env_vars(self.get_env(context)),
            metadata=identity.metadata(),
            correlation_id=identity.correlation_id,
            airflow_hoop=ExecExtension(
                cwd=self.cwd, output_encoding=self.output_encoding, sync_seconds=SYNC_SECONDS
            ),
        )
        self.log.info("Running command on gateway connection %s", self.connection)
        self.log.info("Output:")
        step.used_gateway = True
        try:
            result = run_shell(
                step.client,
                request,
                on_line=lambda line: self.log.info("%s", line),
                on_session=lambda sid: setattr(step, "running_session", sid),
            )
        except BaseException:
            # Timeout or error while the command runs: it must not run on without us.
            _kill_quietly(step)
            raise
        finally:
            step.running_session = None
            end_all_steps()
        response = result.response
        if response.has_review:
            raise BadRequestError(
                f"the gateway holds session {response.session_id} for review",
                "have the command approved, then re-run the task",
            )
        code = response.exit_code if response.exit_code is not None else -2
        self.log.info(
            "Command exited with return code %s (gateway session %s)", code, response.session_id
        )
        if response.truncated:
            self.log.warning(
                "The gateway truncated the output (recorded in its ledger); XCom still gets "
                "the command's last line"
            )
        if code in self.skip_on_exit_code:
            raise AirflowSkipException(f"Bash command returned exit code {code}. Skipping.")
        if code != 0:
            raise AirflowException(
                f"Bash command failed. The command returned a non-zero exit code {code}."
            )
        return self.output_processor(result.last_line)

    def on_kill(self) -> None:
        """Kill the command's process group on the gateway, then end the step."""
        # Airflow may call this from a signal handler while execute() holds a lock of the
        # step's client: do the work in a thread and stop waiting for it after a while.
        worker = threading.Thread(target=_kill_and_end, name="hoop-shell-kill", daemon=True)
        worker.start()
        worker.join(_KILL_WAIT_SECONDS)


def _kill_quietly(step: GovernedStep) -> None:
    try:
        step.kill_running()
    except Exception as exc:  # the step's end below still stops it on the gateway
        log.warning("could not kill gateway session %s: %s", step.running_session, exc)


def _kill_and_end() -> None:
    from airflow_hoop.task.step_session import end_all_steps, kill_all_steps

    kill_all_steps()
    end_all_steps()
