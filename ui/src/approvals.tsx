// The Approvals views: a task instance's reviews and every pending review. Who may not decide
// sees why instead of buttons; a rejection needs a reason (checked here before sending, and by
// the server); the decided review replaces the card at once.
import { useState } from "react";
import { Box, Button, Field, Heading, HStack, Text, Textarea } from "@chakra-ui/react";
import { api, enc } from "./api";
import { Failure, Grid, Loading, RouterLink, Script, Status, Time, paths, useJson } from "./common";
import { age } from "./time";

type Review = {
  id: string; status: string; created_at: string; rejection_reason?: string;
  airflow_hoop?: {
    connection: string; requester: string; triggered_by?: string; justification: string;
    command_sha256: string; expires_at?: string; statements: { script: string }[];
    target: { dag_id: string; run_id: string; task_id: string; map_index: number };
    decisions: { decision: string; approver: string; reason?: string; channel: string; time: string }[];
  };
};
type View = { review: Review; can_decide: boolean; why_not?: string };

function Decide({ view, onDone }: { view: View; onDone: (v: View) => void }) {
  const [reason, setReason] = useState("");
  const [invalid, setInvalid] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error>();
  const ext = view.review.airflow_hoop!;
  const send = async (decision: "APPROVED" | "REJECTED") => {
    if (decision === "REJECTED" && !reason.trim()) {
      setInvalid("Say why you reject: the requester and the audit will read it.");
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      onDone(await api<View>(`decide/${enc(ext.target.dag_id)}/${enc(view.review.id)}`, {
        method: "POST", body: JSON.stringify({ decision, reason, command_sha256: ext.command_sha256 }),
      }));
    } catch (e: any) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Box mt={2}>
      <Field.Root invalid={!!invalid}>
        <Field.Label>Reason (required to reject)</Field.Label>
        <Textarea name="reason" value={reason} maxLength={2000} onChange={(e: any) => { setReason(e.target.value); setInvalid(""); }} />
        <Field.ErrorText data-testid="hoop-reason-error">{invalid}</Field.ErrorText>
      </Field.Root>
      <HStack mt={2}>
        <Button colorPalette="green" loading={busy} onClick={() => send("APPROVED")} data-testid="hoop-approve">Approve</Button>
        <Button colorPalette="red" variant="outline" loading={busy} onClick={() => send("REJECTED")} data-testid="hoop-reject">Reject</Button>
      </HStack>
      {error && <Failure error={error} />}
    </Box>
  );
}

function ReviewCard({ initial }: { initial: View }) {
  const [view, setView] = useState(initial);
  const r = view.review;
  const ext = r.airflow_hoop;
  if (!ext) return null;
  const t = ext.target;
  return (
    <Box borderWidth="1px" borderRadius="md" p={3} mb={3} className="hoop-review" data-review={r.id}>
      <HStack gap={3} wrap="wrap">
        <Status value={r.status} />
        <RouterLink to={paths.logs(t.dag_id, t.run_id, t.task_id, t.map_index)}>{t.dag_id} · {t.task_id}</RouterLink>
        <RouterLink to={paths.run(t.dag_id, t.run_id)}>{t.run_id}</RouterLink>
        <Text color="fg.muted">on {ext.connection} · asked <Time iso={r.created_at} /> ({age(r.created_at)})</Text>
        {ext.expires_at && r.status === "PENDING" && <Text color="fg.muted">expires <Time iso={ext.expires_at} /></Text>}
      </HStack>
      <Text mt={1}>Requested by {ext.requester}{ext.triggered_by ? `, run triggered by ${ext.triggered_by}` : ""}: {ext.justification}</Text>
      <Grid><tbody>{ext.statements.map((s, i) => <tr key={i}><td className="script"><Script text={s.script} /></td></tr>)}</tbody></Grid>
      {ext.decisions.map((d) => (
        <Text key={d.time} mt={1} className="hoop-decision">
          <Status value={d.decision} /> by <b className="approver">{d.approver}</b> via {d.channel} at <Time iso={d.time} />: <span className="reason">{d.reason ?? "no reason given"}</span>
        </Text>
      ))}
      {view.can_decide ? <Decide view={view} onDone={setView} /> : (
        r.status === "PENDING" && <Text mt={2} color="fg.muted" data-testid="hoop-why-not">You cannot decide: {view.why_not}</Text>
      )}
    </Box>
  );
}

export function TaskApprovals({ dagId, runId, taskId, mapIndex }: { dagId: string; runId: string; taskId: string; mapIndex?: string }) {
  const { data, error } = useJson(
    () => api<View[]>(`approvals/${enc(dagId)}/${enc(runId)}/${enc(taskId)}?map_index=${enc(mapIndex ?? "-1")}`),
    [dagId, runId, taskId, mapIndex]);
  if (error) return <Failure error={error} />;
  if (!data) return <Loading />;
  if (!data.length) return <Box p={4}>No approvals for this task instance.</Box>;
  return <Box p={2} data-testid="hoop-task-approvals">{data.map((v) => <ReviewCard key={v.review.id} initial={v} />)}</Box>;
}

export function PendingApprovals() {
  const { data, error } = useJson(() => api<View[]>("approvals"), []);
  return (
    <Box p={4} data-testid="hoop-pending">
      <Heading size="lg" mb={3}>Approvals</Heading>
      {error && <Failure error={error} />}
      {!data && !error && <Loading />}
      {data && !data.length && <Text>No approval is waiting.</Text>}
      {data?.map((v) => <ReviewCard key={v.review.id} initial={v} />)}
    </Box>
  );
}

type Summary = {
  pending: { id: string; dag_id: string; run_id: string; task_id: string; map_index: number; connection: string; created_at: string; expires_at?: string }[];
  rejected_24h: number; failed_commands_24h: number; governed_steps_24h: number; commands_24h: number; more: boolean;
};

export function Dashboard() {
  const { data, error } = useJson(() => api<Summary>("summary"), []);
  if (error) return <Failure error={error} />;
  if (!data) return <Loading />;
  const plus = data.more ? "+" : "";
  return (
    <Box borderWidth="1px" borderRadius="md" p={4} data-testid="hoop-dashboard">
      <Heading size="md" mb={2}>Governed access</Heading>
      <HStack gap={6} mb={2}>
        <Text data-testid="hoop-pending-count"><b>{data.pending.length}</b> approvals waiting</Text>
        <Text><b>{data.rejected_24h}</b> rejected (24 h)</Text>
        <Text><b>{data.failed_commands_24h}{plus}</b> failed commands (24 h)</Text>
        <Text><b>{data.governed_steps_24h}{plus}</b> governed steps (24 h)</Text>
      </HStack>
      {data.pending.length > 0 && (
        <Grid>
          <thead><tr><th>Task</th><th>Connection</th><th>Waiting</th><th>Expires</th></tr></thead>
          <tbody>{data.pending.slice(0, 10).map((p) => (
            <tr key={p.id}>
              <td><RouterLink to={`${paths.logs(p.dag_id, p.run_id, p.task_id, p.map_index)}/plugin/hoop-approvals-ti`}>{p.dag_id} · {p.task_id}</RouterLink></td>
              <td>{p.connection}</td><td>{age(p.created_at)}</td>
              <td>{p.expires_at ? <><Time iso={p.expires_at} /> ({age(p.expires_at)})</> : ""}</td>
            </tr>))}
          </tbody>
        </Grid>
      )}
      <HStack mt={2} gap={4}>
        <RouterLink to="/plugin/hoop-approvals">All approvals</RouterLink>
        <RouterLink to="/plugin/hoop-access-audit">Access audit</RouterLink>
      </HStack>
    </Box>
  );
}
