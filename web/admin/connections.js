// The live connections table: the whole list from GET /admin/connections (tens of thousands of
// rows), filtered, sorted and paged here. Work per change is bounded: a row's sort keys and its
// search text are computed once when the list loads; a filter or sort change re-sorts once; only
// the visible page (PAGE_SIZE rows) is ever in the DOM.

import { fmt } from './format.js';

const PAGE_SIZE = 100;

/** The columns: how each reads its value, sorts and shows. */
const COLUMNS = [
  { key: 'peer', label: 'Peer', value: (c) => c.peer, show: (c) => c.peer, cls: 'mono' },
  { key: 'transport', label: 'Transport', value: (c) => c.transport, show: (c) => c.transport },
  {
    key: 'channels', label: 'Channels', value: (c) => c.channels.join(','),
    show: (c) => (c.channels.length ? c.channels.join(', ') : '—'), cls: 'channels',
  },
  {
    key: 'age', label: 'Age', numeric: true, value: (c) => c.age_seconds,
    show: (c) => (c.age_seconds == null ? '—' : fmt.duration(c.age_seconds)),
  },
  {
    key: 'idle', label: 'Last activity', numeric: true, value: (c) => c.idle_seconds,
    show: (c) => (c.idle_seconds == null ? '—' : c.idle_seconds < 1 ? 'just now' : `${fmt.duration(c.idle_seconds)} ago`),
  },
  {
    key: 'bytes_in', label: 'In', numeric: true, value: (c) => c.bytes_in,
    show: (c) => (c.bytes_in == null ? '—' : fmt.bytes(c.bytes_in)),
  },
  {
    key: 'bytes_out', label: 'Out', numeric: true, value: (c) => c.bytes_out,
    show: (c) => (c.bytes_out == null ? '—' : fmt.bytes(c.bytes_out)),
  },
  { key: 'requests', label: 'Requests', numeric: true, value: (c) => c.requests, show: (c) => fmt.int(c.requests) },
  {
    key: 'heartbeat', label: 'Heartbeat', numeric: true, value: (c) => c.heartbeat_seconds,
    show: (c) => (c.heartbeat_seconds == null ? '—' : fmt.duration(c.heartbeat_seconds)),
  },
];

export class ConnectionTable {
  /**
   * @param {{table: HTMLTableElement, filter: HTMLInputElement, prev: HTMLButtonElement,
   *          next: HTMLButtonElement, pageInfo: HTMLElement}} elements
   */
  constructor(elements) {
    this.el = elements;
    this.rows = [];
    this.view = [];
    this.filter = '';
    this.sort = { key: 'age', descending: true };
    this.page = 0;
    this.buildHead();
    let debounce = 0;
    elements.filter.addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => this.setFilter(elements.filter.value), 120);
    });
    elements.prev.addEventListener('click', () => this.goTo(this.page - 1));
    elements.next.addEventListener('click', () => this.goTo(this.page + 1));
  }

  buildHead() {
    const tr = this.el.table.tHead.rows[0];
    tr.replaceChildren();
    this.headers = COLUMNS.map((column) => {
      const th = document.createElement('th');
      th.className = `sortable${column.numeric ? ' num' : ''}`;
      th.scope = 'col';
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = column.label;
      button.addEventListener('click', () => this.sortBy(column.key));
      th.append(button);
      tr.append(th);
      return th;
    });
    this.markSort();
  }

  markSort() {
    COLUMNS.forEach((column, i) => {
      const sorted = column.key === this.sort.key;
      this.headers[i].setAttribute('aria-sort', sorted ? (this.sort.descending ? 'descending' : 'ascending') : 'none');
    });
  }

  /** Takes a new list (the page and filter stay). */
  load(list) {
    this.rows = list.map((c) => ({
      c,
      keys: COLUMNS.map((column) => {
        const v = column.value(c);
        return column.numeric ? (v == null ? null : Number(v)) : String(v ?? '').toLowerCase();
      }),
      text: `${c.peer} ${c.transport} ${c.state || ''} ${c.channels.join(' ')}`.toLowerCase(),
    }));
    this.refresh();
  }

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    this.page = 0;
    this.refresh();
  }

  sortBy(key) {
    if (this.sort.key === key) {
      this.sort.descending = !this.sort.descending;
    } else {
      const column = COLUMNS.find((c) => c.key === key);
      this.sort = { key, descending: Boolean(column.numeric) };
    }
    this.markSort();
    this.refresh();
  }

  goTo(page) {
    const pages = Math.max(1, Math.ceil(this.view.length / PAGE_SIZE));
    this.page = Math.min(Math.max(0, page), pages - 1);
    this.render();
  }

  /** Filters and sorts once, then renders the current page. */
  refresh() {
    const words = this.filter.split(/\s+/).filter(Boolean);
    const view = words.length ? this.rows.filter((r) => words.every((w) => r.text.includes(w))) : this.rows.slice();
    const index = COLUMNS.findIndex((c) => c.key === this.sort.key);
    const sign = this.sort.descending ? -1 : 1;
    view.sort((a, b) => {
      const x = a.keys[index];
      const y = b.keys[index];
      if (x === y) return 0;
      if (x == null) return 1; // missing values last, whichever the direction
      if (y == null) return -1;
      return x < y ? -sign : sign;
    });
    this.view = view;
    this.goTo(this.page);
  }

  render() {
    const { table, prev, next, pageInfo } = this.el;
    const from = this.page * PAGE_SIZE;
    const visible = this.view.slice(from, from + PAGE_SIZE);
    const body = document.createDocumentFragment();
    for (const row of visible) {
      const tr = document.createElement('tr');
      for (const column of COLUMNS) {
        const td = document.createElement('td');
        td.textContent = column.show(row.c);
        const classes = [column.cls, column.numeric && 'num'].filter(Boolean).join(' ');
        if (classes) td.className = classes;
        tr.append(td);
      }
      body.append(tr);
    }
    if (visible.length === 0) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = COLUMNS.length;
      td.className = 'empty';
      td.textContent = this.rows.length ? 'No connection matches the filter.' : 'No connection listed.';
      tr.append(td);
      body.append(tr);
    }
    table.tBodies[0].replaceChildren(body);
    const pages = Math.max(1, Math.ceil(this.view.length / PAGE_SIZE));
    pageInfo.textContent = this.view.length
      ? `${fmt.int(from + 1)}–${fmt.int(from + visible.length)} of ${fmt.int(this.view.length)} · page ${fmt.int(this.page + 1)} of ${fmt.int(pages)}`
      : '0 of 0';
    prev.disabled = this.page === 0;
    next.disabled = this.page >= pages - 1;
  }
}
