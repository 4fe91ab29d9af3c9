// Type declarations for holdfast.js, the browser client of Holdfast (a push server: pub/sub
// channels over WebSocket, Server-Sent Events and long polling, with history and cursors).
//
//   import { subscribe, publish } from 'http://host:7700/holdfast.js';
//   const sub = subscribe('http://host:7700', ['room'], { onMessage: (m) => console.log(m.data) });
//   const id = await publish('http://host:7700', 'room', 'hello', { event: 'chat' });

/** How a subscription receives messages. */
export type Transport = 'ws' | 'sse' | 'longpoll';

/** Where a subscription's link is. */
export type LinkState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** A published message. */
export interface Message {
  /** The channel it was published to. Server-Sent Events do not say which: with several
   * channels over SSE this is the subscription's channel list, `a,b`. */
  channel: string;
  /** The publisher's event type (`message` unless set). */
  event: string;
  /** The payload: text (a payload published as JSON comes as its JSON text), or bytes for a
   * payload that is not UTF-8. */
  data: string | Uint8Array;
  /** The payload parsed as JSON, or `undefined` when it is not JSON. */
  json: unknown;
  /** The cursor right after this message: hand it back as `options.cursor` to resume after it. */
  cursor: string;
}

/** Messages were lost before the next ones: the cursor pointed at messages the server no longer
 * keeps, or into another epoch (the server restarted, the channel was deleted). Never silent. */
export interface Gap {
  /** The channel that lost messages. */
  channel: string;
  /** How many were lost; `null` when the epoch changed and the count is unknown. */
  lost: number | null;
  /** The first sequence number still available in the channel. */
  first_available: number;
}

/** The server ended the subscription (a `holdfast.closed` notice), or a poll answer listed a
 * deleted channel. The client reconnects and resumes by itself; after `channel_deleted` the
 * next connection starts with a gap for that channel. */
export interface Closed {
  /** The channel concerned, or the subscription's channel list (`a,b`) for a close of the whole
   * connection. */
  channel: string;
  /** The server's close reason: `admin_disconnect`, `shutdown`, `channel_deleted`,
   * `slow_consumer`, `send_timeout`, `history_lost`, … */
  reason: string;
  /** Where the subscription resumes, when the notice says. */
  cursor?: string;
}

/** A change of the link's state. In a tab that shares another tab's connection these are the
 * leader tab's states. */
export interface StateChange {
  state: LinkState;
  /** The transport being tried (`connecting`), in use (`connected`), that just ended
   * (`reconnecting`) or last used (`closed`). */
  transport: Transport | null;
  /** `connecting`, `reconnecting`: waits since the last link that worked (the backoff's n). */
  attempt?: number;
  /** `reconnecting`: seconds before the next attempt; 0 when falling back to the next transport
   * at once. */
  after?: number;
  /** `reconnecting`, `closed`: why, in plain words (`no byte for 50 s …`, `WebSocket refused`,
   * `closed by the server: admin_disconnect`, `400 bad_channel: …`, `closed by the page`). */
  cause?: string;
  /** `connected`: the heartbeat interval in force, in seconds; silence for twice that and the
   * link is declared dead. */
  heartbeat?: number;
}

export interface SubscribeOptions {
  /** Transports to use, in order of preference; default `['ws', 'sse', 'longpoll']`. The one
   * that last worked for this server (remembered in localStorage) is tried first. */
  transports?: Transport[];
  /** Called for each message, in order, exactly once. */
  onMessage?: (message: Message) => void;
  /** Called when messages were lost (before the messages that follow). */
  onGap?: (gap: Gap) => void;
  /** Called for each state change of the link. */
  onState?: (change: StateChange) => void;
  /** Called when the server ends the subscription with a notice (it then reconnects by itself). */
  onClosed?: (closed: Closed) => void;
  /** Replay the last N kept messages of each channel first (only when starting without a
   * cursor). */
  history?: number;
  /** Resume after this cursor (a message's `cursor`, or `handle.cursor`). */
  cursor?: string;
  /** The heartbeat interval to ask the server for, in seconds (default 25; the server clamps it
   * to its `heartbeat_min`..`heartbeat_max`). Twice the interval without a byte and the link is
   * dead: it is dropped and made again. */
  heartbeat?: number;
  /** Share one connection between the tabs of this browser that subscribe to the same channels
   * on the same server (default true). Needs the Web Locks API (a secure context: https, or
   * localhost) and BroadcastChannel; without them each tab connects itself. */
  share?: boolean;
  /** Reconnection backoff in seconds: wait a random time in `[0, min(cap, base · 2ⁿ)]`, n
   * counting waits since the last link that worked. Default `{ base: 1, cap: 30 }`. */
  backoff?: { base?: number; cap?: number };
  /** A token for a server with authentication on (sent as `?token=`). A function is called for
   * the first link and again whenever the server refuses the token (401) or ends the link with
   * `token_expired` (WebSocket close 4003, or the notice): the subscription then resumes from its
   * cursor with the new token, losing nothing. A static token the server refuses ends the
   * subscription (`closed`), as does a 403 (the token does not grant these channels). */
  token?: Token;
}

/** A token, or a function that gives a fresh one. */
export type Token = string | (() => string | Promise<string>);

/** A running subscription. */
export interface Subscription {
  /** Stops it for good (this tab only: another tab sharing the connection takes it over). */
  close(): void;
  /** The cursor after the last message seen (or where the subscription started): where it
   * would resume. `null` before the server named a position. */
  readonly cursor: string | null;
  /** The transport in use or being tried (the leader tab's when shared). */
  readonly transport: Transport | null;
  /** The link's state (the leader tab's when shared). */
  readonly state: LinkState;
  /** Whether this tab holds the connection (always, once connecting, when not shared). */
  readonly leader: boolean;
}

/** Options of a publish. */
export interface PublishOptions {
  /** The event type (default `message`): 1–64 of `A-Z a-z 0-9 _ . : -`. */
  event?: string;
  /** Send `data` as JSON (`Content-Type: application/json`); subscribers get it in
   * `message.json`. Default: true for anything but a string, Blob, ArrayBuffer or typed array. */
  json?: boolean;
  /** A token for a server with authentication on (sent as `?token=`); a function is called for
   * each publish. */
  token?: Token;
}

/** An error from the server: `status` and the JSON answer's `label` (`bad_channel`,
 * `bad_event`, `bad_json`, `too_many_channels`, …) and `reason`. */
export interface HoldfastError extends Error {
  status: number;
  label?: string;
  reason?: string;
}

/**
 * Subscribes to `channels` on the server at `baseUrl` (`http://host:7700`; a relative URL
 * resolves against the page). `channels` is a name, a comma-separated list, or an array of
 * names (1–128 of `A-Z a-z 0-9 _ - . : @`, at most 64). The subscription connects, falls back
 * from WebSocket to SSE to long polling when a transport cannot work here, reconnects with
 * backoff and resumes from its cursor, and shares one connection between tabs, by itself.
 * Callbacks never run inside this call.
 */
export declare function subscribe(
  baseUrl: string,
  channels: string | string[],
  options?: SubscribeOptions,
): Subscription;

/**
 * Publishes `data` to `channel` (`POST /pub/{channel}`). Resolves to the message's id, the
 * cursor right after it. Rejects with a {@link HoldfastError} when the server refuses (or with
 * the TypeError of `fetch` when the server cannot be reached).
 */
export declare function publish(
  baseUrl: string,
  channel: string,
  data: unknown,
  options?: PublishOptions,
): Promise<string>;
