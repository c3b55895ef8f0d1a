// Calls the plugin's JSON endpoints with the UI's own session (the _token cookie, same origin).
export class ApiError extends Error {
  constructor(public status: number, public what: string, public fix: string) {
    super(what);
  }
}

export function hoopUrl(path: string): string {
  return new URL(`hoop/${path}`, document.baseURI).href;
}

export async function api<T>(path: string, init?: RequestInit): Promise<T> {
  const response = await fetch(hoopUrl(`ui/api/${path}`), {
    credentials: "same-origin",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    ...init,
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = body?.detail;
    const what = typeof detail === "string" ? detail : detail?.what ?? `HTTP ${response.status}`;
    throw new ApiError(response.status, what, detail?.fix ?? "");
  }
  return body as T;
}

export const enc = encodeURIComponent;
