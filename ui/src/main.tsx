// The plugin bundle's entry: one component per react_apps name (plugins/app.py). Airflow
// import()s this module, then renders globalThis[<name>] with {dagId, runId, taskId, mapIndex}
// from the route: the props say which page (task instance, run, DAG, or none for the nav page).
import { AuditSearch, DagAudit, RunAudit, TaskAudit } from "./audit";
import { Dashboard, PendingApprovals, TaskApprovals } from "./approvals";

type Props = { dagId?: string; runId?: string; taskId?: string; mapIndex?: string };

function AccessAudit(p: Props) {
  if (p.dagId && p.runId && p.taskId) return <TaskAudit dagId={p.dagId} runId={p.runId} taskId={p.taskId} mapIndex={p.mapIndex} />;
  if (p.dagId && p.runId) return <RunAudit dagId={p.dagId} runId={p.runId} />;
  if (p.dagId) return <DagAudit dagId={p.dagId} />;
  return <AuditSearch />;
}

function Approvals(p: Props) {
  if (p.dagId && p.runId && p.taskId) return <TaskApprovals dagId={p.dagId} runId={p.runId} taskId={p.taskId} mapIndex={p.mapIndex} />;
  return <PendingApprovals />;
}

const g = globalThis as any;
g["Access audit"] = AccessAudit;
g["Approvals"] = Approvals;
g["Governed access"] = Dashboard;
g.AirflowPlugin = AccessAudit;
