/** A uPlot chart (lines or bars) sized to its container. */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { bytes } from '../format';

export interface Series {
  label: string;
  color: string;
  values: Array<number | null>;
}

export function Chart(props: { title: string; x: number[]; series: Series[]; kind: 'line' | 'bars'; time?: boolean; xLabels?: string[]; xLabel?: string; yBytes?: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = () => Math.max(260, el.clientWidth);
    const bars = props.kind === 'bars' ? uPlot.paths.bars!({ size: [0.6, 60] }) : undefined;
    const fmtY = (v: number) => (props.yBytes ? bytes(v) : String(Math.round(v * 100) / 100));
    const opts: uPlot.Options = {
      width: width(),
      height: 220,
      scales: {
        x: props.xLabels ? { time: false, auto: false, range: (): uPlot.Range.MinMax => [-0.5, props.x.length - 0.5] } : { time: props.time === true },
        y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        // Categories (bars): one tick per bar, labelled with its name.
        props.xLabels ? { splits: () => props.x, values: (_u, ticks) => ticks.map((t) => props.xLabels![Math.round(t)] ?? '') } : {},
        { values: (_u, ticks) => ticks.map(fmtY), size: 80 },
      ],
      series: [props.xLabels ? { label: props.xLabel ?? 'x', value: (_u: uPlot, v: number | null) => (v === null ? '–' : props.xLabels![Math.round(v)] ?? '') } : {}, ...props.series.map((s) => ({ label: s.label, stroke: s.color, fill: props.kind === 'bars' ? s.color : undefined, width: 2, value: (_u: uPlot, v: number | null) => (v === null ? '–' : fmtY(v)), ...(bars ? { paths: bars, points: { show: false } } : {}) }))],
    };
    const plot = new uPlot(opts, [props.x, ...props.series.map((s) => s.values)] as uPlot.AlignedData, el);
    const ro = new ResizeObserver(() => plot.setSize({ width: width(), height: 220 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.destroy();
    };
  }, [props.x, props.series]);
  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={box} role="img" aria-label={props.title} />
    </figure>
  );
}
