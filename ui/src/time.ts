// Times as Airflow shows them: "YYYY-MM-DD HH:mm:ss" in the zone picked in Airflow's user menu
// (localStorage "timezone", JSON), following it when it changes.
import { useEffect, useState } from "react";

function selectedZone(): string {
  try {
    const raw = localStorage.getItem("timezone");
    const zone = raw ? JSON.parse(raw) : "UTC";
    return typeof zone === "string" && zone ? zone : "UTC";
  } catch {
    return "UTC";
  }
}

export function useZone(): string {
  const [zone, setZone] = useState(selectedZone);
  useEffect(() => {
    const update = () => setZone(selectedZone());
    window.addEventListener("storage", update);
    window.addEventListener("local-storage", update);
    return () => {
      window.removeEventListener("storage", update);
      window.removeEventListener("local-storage", update);
    };
  }, []);
  return zone;
}

const formats = new Map<string, Intl.DateTimeFormat>();

export function formatTime(iso: string | null | undefined, zone: string): string {
  if (!iso) return "";
  let fmt = formats.get(zone);
  if (!fmt) {
    try {
      fmt = new Intl.DateTimeFormat("en-CA", {
        timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
      });
    } catch {
      fmt = new Intl.DateTimeFormat("en-CA", { timeZone: "UTC" });
    }
    formats.set(zone, fmt);
  }
  const parts = Object.fromEntries(fmt.formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}

export function age(iso: string, now = Date.now()): string {
  const seconds = Math.round((now - new Date(iso).getTime()) / 1000);
  const abs = Math.abs(seconds);
  const text = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : `${Math.round(abs / 3600)} h`;
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}
