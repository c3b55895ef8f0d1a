// The "Access audit" views: a task instance's try, a DAG run's governed steps, a DAG's runs,
// and the search page. Data from /hoop/ui/api/*; every value rendered as text by React.
import { useState } from "react";
import { Box, Button, Flex, Heading, HStack, Input, Text, NativeSelect } from "@chakra-ui/react";
import { useSearchParams } from "react-router-dom";
import { api, enc } from "./api";
import { Bars } from "./chart";
import { Failure, Grid, Loading, RouterLink, Script, Status, Time, paths, useJson } from "./common";

type Command = {
  index: number; seq: number; time: string; connection: string; script: string; shell: boolean;
  runner?: string; status: string; exit_code?: number; rows?: number; duration_ms?: number;
  error?: string; label?: string;
  approval?: { review_id: string; requested_by?: string; justification: string;
    decisions: { decision: string; approver: string; reason?: string; channel: string; time: string }[] };
};
type Step = {
  step: { dag_id: string; task_id: string; run_id: string; try_number: number; map_index: number; triggered_by?: string };
  key: string; runners: string[]; commands: Command[];
  refusals: { time: string; what: string; detail: string }[];
};

function Commands({ step }: { step: Step }) {
  return (
    <Grid testid="hoop-commands">
      <thead><tr><th>#</th><th>Time</th><th>Connection</th><th>Command</th><th>Status</th><th>Rows</th><th>ms</th><th>Approval</th></tr></thead>
      <tbody>
        {step.commands.map((c) => (
          <tr key={c.seq} className="hoop-command">
            <td>{c.index}</td>
            <td><Time iso={c.time} /></td>
            <td>{c.connection}{c.runner ? ` (${c.runner})` : ""}</td>
            <td className="script"><Script text={c.script} />{c.error && <Text color="fg.error">{c.error}</Text>}</td>
            <td><Status value={c.status} /></td>
            <td>{c.rows ?? ""}</td>
            <td>{c.duration_ms != null ? Math.round(c.duration_ms) : ""}</td>
            <td>{c.approval?.decisions.map((d) => (
              <div key={d.time} className="approval">
                <Status value={d.decision} /> <b className="approver">{d.approver}</b>{" "}
                <span className="reason">{d.reason ?? ""}</span>
              </div>
            ))}</td>
          </tr>
        ))}
      </tbody>
    </Grid>
  );
}

function StepHeader({ step }: { step: Step }) {
  const s = step.step;
  return (
    <HStack gap={3} wrap="wrap" mb={2}>
      <Heading size="sm" id={`step-${s.task_id}-${s.try_number}`}>{s.task_id} · try {s.try_number}</Heading>
      {s.triggered_by && <Text color="fg.muted">triggered by {s.triggered_by}</Text>}
      <Text color="fg.muted">{step.commands.length} commands</Text>
      <RouterLink to={paths.logs(s.dag_id, s.run_id, s.task_id, s.map_index, s.try_number)} testid="hoop-logs-link">logs of this try</RouterLink>
      {step.refusals.length > 0 && <Status value="failed" />}
    </HStack>
  );
}

export function TaskAudit({ dagId, runId, taskId, mapIndex }: { dagId: string; runId: string; taskId: string; mapIndex?: string }) {
  const [tryNumber, setTry] = useState<number>();
  const mi = mapIndex ?? "-1";
  const { data, error } = useJson(
    () => api<{ step: Step | null; tries: number[]; truncated: boolean }>(
      `ti/${enc(dagId)}/${enc(runId)}/${enc(taskId)}?map_index=${enc(mi)}${tryNumber ? `&try_number=${tryNumber}` : ""}`),
    [dagId, runId, taskId, mi, tryNumber]);
  if (error) return <Failure error={error} />;
  if (!data) return <Loading />;
  if (!data.step)
    return (
      <Box p={4} data-testid="hoop-no-step">
        <Text>This try has no governed commands in the ledger: it did not reach the gateway.</Text>
        <RouterLink to={paths.logs(dagId, runId, taskId, Number(mi))}>See its logs for why</RouterLink>
      </Box>
    );
  return (
    <Box p={2} data-testid="hoop-task-audit">
      <HStack mb={2}>
        {data.tries.length > 1 && data.tries.map((t) => (
          <Button key={t} size="xs" variant={t === data.step!.step.try_number ? "solid" : "outline"} onClick={() => setTry(t)}>try {t}</Button>
        ))}
      </HStack>
      <StepHeader step={data.step} />
      {data.step.refusals.map((r) => <Text key={r.time} color="fg.error">Refused: {r.what} {r.detail}</Text>)}
      <Commands step={data.step} />
    </Box>
  );
}

export function RunAudit({ dagId, runId }: { dagId: string; runId: string }) {
  const { data, error } = useJson(() => api<{ steps: Step[] }>(`run/${enc(dagId)}/${enc(runId)}`), [dagId, runId]);
  if (error) return <Failure error={error} />;
  if (!data) return <Loading />;
  if (!data.steps.length) return <Box p={4}>No governed steps in this run.</Box>;
  return (
    <Box p={2} data-testid="hoop-run-audit">
      {data.steps.map((s) => (
        <Box key={s.key} mb={6}><StepHeader step={s} /><Commands step={s} /></Box>
      ))}
    </Box>
  );
}

export function DagAudit({ dagId }: { dagId: string }) {
  type Run = { run_id: string; first_time: string; last_time: string; records: number; commands: number; failed: number };
  const { data, error } = useJson(() => api<{ runs: Run[] }>(`dag/${enc(dagId)}`), [dagId]);
  if (error) return <Failure error={error} />;
  if (!data) return <Loading />;
  return (
    <Box p={2} data-testid="hoop-dag-audit">
      <Bars
        title="Governed commands per run (red: failed), oldest to newest"
        bars={[...data.runs].reverse().map((r) => ({ label: r.run_id, value: r.commands, bad: r.failed }))}
      />
      <Grid>
        <thead><tr><th>Run</th><th>First</th><th>Last</th><th>Commands</th><th>Failed</th></tr></thead>
        <tbody>{data.runs.map((r) => (
          <tr key={r.run_id}>
            <td><RouterLink to={`${paths.run(dagId, r.run_id)}/plugin/hoop-access-audit-run`}>{r.run_id}</RouterLink></td>
            <td><Time iso={r.first_time} /></td><td><Time iso={r.last_time} /></td>
            <td>{r.commands}</td><td>{r.failed}</td>
          </tr>))}
        </tbody>
      </Grid>
    </Box>
  );
}

type Row = { seq: number; time: string; dag_id: string; task_id: string; run_id: string; try_number: number;
  map_index: number; connection: string; script: string; db_user?: string; triggered_by?: string; status: string; rows?: number };
const FIELDS = ["dag_id", "task_id", "connection", "user", "status", "since", "until"] as const;

export function AuditSearch() {
  const [params, setParams] = useSearchParams();
  const [pages, setPages] = useState<number[]>([]);
  const query = new URLSearchParams();
  FIELDS.forEach((f) => params.get(f) && query.set(f, params.get(f)!));
  const before = pages[pages.length - 1];
  if (before) query.set("before_seq", String(before));
  const { data, error } = useJson(
    () => api<{ rows: Row[]; next_before_seq?: number; matched_dags?: string[]; dags: string[] }>(`search?${query}`),
    [query.toString()]);
  const submit = (e: any) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const next = new URLSearchParams();
    FIELDS.forEach((f) => { const v = String(form.get(f) ?? "").trim(); if (v) next.set(f, v); });
    setPages([]);
    setParams(next);
  };
  return (
    <Box p={4} data-testid="hoop-search">
      <Heading size="lg" mb={3}>Access audit</Heading>
      <form onSubmit={submit} id="hoop-search-form">
        <Flex gap={2} wrap="wrap" mb={3}>
          <Input name="dag_id" placeholder="DAG (etl, *_load)" defaultValue={params.get("dag_id") ?? ""} width="48" list="hoop-dags" />
          <datalist id="hoop-dags">{data?.dags.map((d) => <option key={d} value={d} />)}</datalist>
          <Input name="task_id" placeholder="Task" defaultValue={params.get("task_id") ?? ""} width="40" />
          <Input name="connection" placeholder="Connection" defaultValue={params.get("connection") ?? ""} width="40" />
          <Input name="user" placeholder="User" defaultValue={params.get("user") ?? ""} width="40" />
          <NativeSelect.Root width="36"><NativeSelect.Field name="status" defaultValue={params.get("status") ?? ""}>
            <option value="">any status</option>
            {["success", "failed", "killed", "interrupted", "open"].map((s) => <option key={s} value={s}>{s}</option>)}
          </NativeSelect.Field></NativeSelect.Root>
          <Button type="submit" colorPalette="blue">Search</Button>
        </Flex>
      </form>
      {error && <Failure error={error} />}
      {!data && !error && <Loading />}
      {data && (
        <>
          <Text mb={2} color="fg.muted" data-testid="hoop-count">
            {data.rows.length}{data.next_before_seq ? "+" : ""} commands on this page
            {data.matched_dags ? ` · DAG filter matched ${data.matched_dags.length} DAG(s)` : ""}
          </Text>
          <Grid testid="hoop-results">
            <thead><tr><th>Time</th><th>DAG</th><th>Task</th><th>Run</th><th>Connection</th><th>Command</th><th>User</th><th>Status</th></tr></thead>
            <tbody>{data.rows.map((r) => (
              <tr key={r.seq} className="hoop-row">
                <td><Time iso={r.time} /></td>
                <td><RouterLink to={paths.dag(r.dag_id)}>{r.dag_id}</RouterLink></td>
                <td><RouterLink to={paths.logs(r.dag_id, r.run_id, r.task_id, r.map_index, r.try_number)} testid="hoop-row-logs">{r.task_id}</RouterLink></td>
                <td><RouterLink to={paths.run(r.dag_id, r.run_id)}>{r.run_id}</RouterLink></td>
                <td>{r.connection}</td>
                <td><Script text={r.script} /></td>
                <td>{r.db_user ?? ""}{r.triggered_by ? ` / ${r.triggered_by}` : ""}</td>
                <td><Status value={r.status} /></td>
              </tr>))}
            </tbody>
          </Grid>
          <HStack mt={3}>
            <Button size="sm" variant="outline" disabled={!pages.length} onClick={() => setPages(pages.slice(0, -1))}>Newer</Button>
            <Button size="sm" variant="outline" disabled={!data.next_before_seq} onClick={() => setPages([...pages, data.next_before_seq!])}>Older</Button>
          </HStack>
        </>
      )}
    </Box>
  );
}
