// Number, byte, rate, duration and latency formats for the dashboard: thousands separators and
// units everywhere, the same way in every panel.

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const twoDecimals = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export const fmt = {
  /** 20,000 */
  int: (n) => (n == null || Number.isNaN(n) ? '—' : integer.format(n)),

  /** 1.5 MiB (binary units, one decimal below 10 of a unit). */
  bytes(n) {
    if (n == null || Number.isNaN(n)) return '—';
    let unit = 0;
    let value = n;
    while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
      value /= 1024;
      unit += 1;
    }
    const shown = unit === 0 || value >= 10 ? integer.format(value) : oneDecimal.format(value);
    return `${shown} ${BYTE_UNITS[unit]}`;
  },

  /** A per-second rate: 0.4, 12, 3,402. */
  rate(n) {
    if (n == null || Number.isNaN(n)) return '—';
    if (n > 0 && n < 10) return oneDecimal.format(n);
    return integer.format(n);
  },

  /** 42 s, 3 min 12 s, 2 h 5 min, 3 d 4 h (fractions of a second below 10 s). */
  duration(seconds) {
    if (seconds == null || Number.isNaN(seconds)) return '—';
    const s = Math.max(0, seconds);
    if (s < 1) return `${twoDecimals.format(s)} s`;
    if (s < 10) return `${oneDecimal.format(s).replace(/\.0$/, '')} s`;
    if (s < 60) return `${Math.floor(s)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
    const h = Math.floor(m / 60);
    if (h < 24) return `${h} h ${m % 60} min`;
    return `${integer.format(Math.floor(h / 24))} d ${h % 24} h`;
  },

  /** A latency in seconds: 85 µs, 4.2 ms, 1.30 s. */
  latency(seconds) {
    if (seconds == null || Number.isNaN(seconds)) return '—';
    if (seconds < 0.001) return `${integer.format(seconds * 1e6)} µs`;
    if (seconds < 1) return `${seconds < 0.01 ? oneDecimal.format(seconds * 1000) : integer.format(seconds * 1000)} ms`;
    return `${twoDecimals.format(seconds)} s`;
  },

  /** A ratio as a percentage: 97.3 %. */
  percent: (ratio) => (ratio == null || Number.isNaN(ratio) ? '—' : `${oneDecimal.format(ratio * 100)} %`),

  /** Local wall-clock time of a Unix-epoch millisecond: 14:03:27. */
  time: (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false }),
};
