// A small SVG bar chart in the theme's colours (no chart library: the bundle stays small).
import { Box, Text } from "@chakra-ui/react";

export type Bar = { label: string; value: number; bad: number };

export function Bars({ title, bars }: { title: string; bars: Bar[] }) {
  const max = Math.max(1, ...bars.map((b) => b.value));
  const width = 24;
  return (
    <Box mb={4} data-testid="hoop-chart">
      <Text fontSize="sm" color="fg.muted" mb={1}>{title}</Text>
      <svg width={bars.length * width} height={80} role="img" aria-label={title}>
        {bars.map((b, i) => {
          const h = (b.value / max) * 70;
          const bad = (b.bad / max) * 70;
          return (
            <g key={b.label}>
              <title>{`${b.label}: ${b.value} (${b.bad} failed)`}</title>
              <rect x={i * width + 4} y={78 - h} width={width - 8} height={h} fill="var(--chakra-colors-blue-solid)" />
              <rect x={i * width + 4} y={78 - bad} width={width - 8} height={bad} fill="var(--chakra-colors-red-solid)" />
            </g>
          );
        })}
      </svg>
    </Box>
  );
}
