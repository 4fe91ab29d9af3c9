// A small canvas line chart for the dashboard's time series: a time span ending at the newest
// sample (what has been collected, from one minute up to `spanMs`), a few series, "nice" y ticks, breaks where samples are missing (the feed was
// down). Hand-written rather than a charting library: two charts of one point a second need
// ~150 lines, no vendored file and no licence to carry. Colours come from the page's CSS
// custom properties, so light and dark schemes follow the stylesheet.

/** Steps between time labels, in seconds. */
const TICKS_S = [10, 15, 20, 30, 60, 120, 180, 300, 600, 900];

const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

/** A step of 1, 2, 2.5 or 5 × 10^k at or above `v`. */
function niceStep(v) {
  if (!(v > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  const f = v / exp;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * exp;
}

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas sized by CSS; redrawn when it resizes
   * @param {{series: {color: string, fill?: boolean}[], spanMs: number, minSpanMs?: number,
   *          gapMs?: number, format?: (n: number) => string, integer?: boolean}} options
   *   `color` names a CSS custom property (`--accent`); samples further apart than `gapMs` are
   *   not joined
   */
  constructor(canvas, options) {
    this.canvas = canvas;
    this.options = { gapMs: 3500, minSpanMs: 60000, format: (n) => compact.format(n), ...options };
    this.times = [];
    this.values = options.series.map(() => []);
    this.pending = false;
    new ResizeObserver(() => this.schedule()).observe(canvas);
    matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => this.schedule());
  }

  /** Replaces the data: `times` in ms, one array of values per series (null: no value). */
  set(times, values) {
    this.times = times;
    this.values = values;
    this.schedule();
  }

  /** Draws at the next frame (several updates in one frame draw once). */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const { canvas, options } = this;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const css = getComputedStyle(canvas);
    const color = (name) => css.getPropertyValue(name).trim() || '#888';

    const end = this.times.length ? this.times[this.times.length - 1] : Date.now();
    const collected = this.times.length ? end - this.times[0] : 0;
    const span = Math.min(options.spanMs, Math.max(options.minSpanMs, collected));
    const start = end - span;
    let max = 0;
    this.times.forEach((t, i) => {
      if (t < start) return;
      for (const values of this.values) {
        if (values[i] != null && values[i] > max) max = values[i];
      }
    });
    let step = niceStep(max / 4);
    if (options.integer) step = Math.max(1, Math.ceil(step));
    const top = step * 4;

    ctx.font = '11px system-ui, -apple-system, "Segoe UI", sans-serif';
    const labels = [0, 1, 2, 3, 4].map((i) => options.format(step * i));
    const left = Math.ceil(Math.max(...labels.map((l) => ctx.measureText(l).width))) + 10;
    const right = 8;
    const topPad = 8;
    const bottom = 20;
    const plotW = Math.max(1, width - left - right);
    const plotH = Math.max(1, height - topPad - bottom);
    const x = (t) => left + ((t - start) / span) * plotW;
    const y = (v) => topPad + plotH - (v / top) * plotH;

    // Grid and y labels.
    ctx.strokeStyle = color('--grid');
    ctx.fillStyle = color('--faint');
    ctx.lineWidth = 1;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (let i = 0; i <= 4; i++) {
      const gy = Math.round(y(step * i)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, gy);
      ctx.lineTo(width - right, gy);
      ctx.stroke();
      ctx.fillText(labels[i], left - 6, gy);
    }
    // Time labels back from the newest sample, at a round step, one per ~64 px at most.
    ctx.textBaseline = 'top';
    const most = Math.max(2, Math.floor(plotW / 64));
    const tick = TICKS_S.find((s) => span / (s * 1000) <= most) || TICKS_S[TICKS_S.length - 1];
    for (let back = 0; back * 1000 <= span; back += tick) {
      const tx = x(end - back * 1000);
      const last = (back + tick) * 1000 > span;
      ctx.textAlign = back === 0 ? 'right' : last && tx - left < 24 ? 'left' : 'center';
      const label = back === 0 ? 'now' : back < 60 ? `−${back} s` : `−${back / 60} min`;
      ctx.fillText(label, tx, height - bottom + 5);
    }

    // Series, newest drawn last; the first may be filled.
    options.series.forEach((series, s) => {
      const values = this.values[s] || [];
      const stroke = color(series.color);
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 1.75;
      ctx.lineJoin = 'round';
      let run = [];
      const flush = () => {
        if (run.length === 0) return;
        ctx.beginPath();
        run.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
        if (run.length === 1) ctx.lineTo(run[0][0] + 1, run[0][1]);
        ctx.stroke();
        if (series.fill) {
          ctx.lineTo(run[run.length - 1][0], y(0));
          ctx.lineTo(run[0][0], y(0));
          ctx.closePath();
          ctx.globalAlpha = 0.12;
          ctx.fillStyle = stroke;
          ctx.fill();
          ctx.globalAlpha = 1;
        }
        run = [];
      };
      let previous = null;
      this.times.forEach((t, i) => {
        const v = values[i];
        if (t < start || v == null) {
          flush();
          previous = null;
          return;
        }
        if (previous != null && t - previous > options.gapMs) flush();
        run.push([x(t), y(Math.min(v, top))]);
        previous = t;
      });
      flush();
    });
  }
}
