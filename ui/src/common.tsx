// Small pieces every view uses: loading/error states, a time, router links to Airflow's pages.
import { useEffect, useState } from "react";
import { Box, Spinner, Text, Link as ChakraLink, Badge } from "@chakra-ui/react";
import { Link } from "react-router-dom";
import { ApiError, enc } from "./api";
import { formatTime, useZone } from "./time";

export function useJson<T>(load: () => Promise<T>, deps: unknown[]): {
  data?: T; error?: ApiError | Error; reload: () => void; setData: (d: T) => void;
} {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<ApiError | Error>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setError(undefined);
    load().then((d) => live && setData(d), (e) => live && setError(e));
    return () => { live = false; };
  }, [...deps, tick]);
  return { data, error, reload: () => setTick((t) => t + 1), setData };
}

export function Loading() {
  return <Box p={4} data-testid="hoop-loading"><Spinner size="sm" /> Loading…</Box>;
}

export function Failure({ error }: { error: Error }) {
  const fix = error instanceof ApiError ? error.fix : "";
  return (
    <Box p={4} borderWidth="1px" borderColor="red.solid" borderRadius="md" className="hoop-error">
      <Text fontWeight="bold" color="fg.error">{error.message}</Text>
      {fix && <Text>Fix: {fix}</Text>}
    </Box>
  );
}

export function Time({ iso }: { iso?: string | null }) {
  const zone = useZone();
  return <time dateTime={iso ?? undefined}>{formatTime(iso, zone)}</time>;
}

export function RouterLink({ to, children, testid }: { to: string; children: any; testid?: string }) {
  return (
    <ChakraLink asChild color="fg.info" data-testid={testid}>
      <Link to={to}>{children}</Link>
    </ChakraLink>
  );
}

/** Airflow's own pages: a try's logs (the task instance page opens on its logs), a run, a DAG. */
export const paths = {
  dag: (dag: string) => `/dags/${enc(dag)}`,
  run: (dag: string, run: string) => `/dags/${enc(dag)}/runs/${enc(run)}`,
  logs: (dag: string, run: string, task: string, mapIndex: number, tryNumber?: number) =>
    `/dags/${enc(dag)}/runs/${enc(run)}/tasks/${enc(task)}` +
    (mapIndex >= 0 ? `/mapped/${mapIndex}` : "") +
    (tryNumber ? `?try_number=${tryNumber}` : ""),
};

const STATUS: Record<string, string> = {
  success: "green", failed: "red", killed: "red", interrupted: "orange", open: "gray",
  PENDING: "yellow", APPROVED: "green", REJECTED: "red", REVOKED: "red", EXECUTED: "blue",
};

export function Status({ value }: { value: string }) {
  return <Badge colorPalette={STATUS[value] ?? "gray"} className={`hoop-status ${value}`}>{value}</Badge>;
}

/** Native table styled with the theme's tokens: 1,000 rows of Chakra's Table components cost
 * hundreds of milliseconds; plain rows under one styled box cost a few. */
export function Grid({ children, testid }: { children: any; testid?: string }) {
  return (
    <Box
      as="table"
      width="100%"
      fontSize="sm"
      data-testid={testid}
      css={{
        borderCollapse: "collapse",
        "& th": { textAlign: "left", fontWeight: 600, padding: "6px 8px", borderBottom: "1px solid var(--chakra-colors-border)", color: "var(--chakra-colors-fg-muted)" },
        "& td": { padding: "6px 8px", borderBottom: "1px solid var(--chakra-colors-border-muted)", verticalAlign: "top" },
        "& pre": { margin: 0, whiteSpace: "pre-wrap", wordBreak: "break-word", fontFamily: "var(--chakra-fonts-mono)", fontSize: "12px" },
      }}
    >
      {children}
    </Box>
  );
}

export function Script({ text }: { text: string }) {
  if (text.length <= 300 && text.split("\n").length < 4) return <pre>{text}</pre>;
  const first = text.trim().split("\n")[0].slice(0, 120);
  return (
    <details>
      <summary><code>{first}</code> ({text.length} characters, show all)</summary>
      <pre>{text}</pre>
    </details>
  );
}
