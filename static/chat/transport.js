// Browser transport of the chat protocol (docs/browser-transport.md, docs/protocol.md).
//
//   const chat = new ChatTransport({ sessionId });
//   chat.addEventListener("change", render);
//   await chat.connect();
//   const turn = await chat.send("Plan a trip", { policy: "queue" });
//   for await (const text of turn.stream()) out.textContent += text;
//
// One instance is one websocket connection to one session (one "device"). It keeps the
// session's state by applying events strictly in `seq` order, resumes from the last seq it
// applied after any drop (with backoff), and re-sends commands that were in flight when the
// socket dropped: sends carry client-chosen ids and cancels are idempotent, so a resend
// can never create or cancel twice. A command given while disconnected waits for the
// connection (a send shows in `outbox` meanwhile) and is sent once it is back.

import { ConversationTree, textOf } from "./tree.js";

export { textOf };

/** An error answer; `code` is the protocol's error code (busy, queue_full, ...). */
export class ChatError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
    this.detail = message;
  }
}

/** A random id; crypto.randomUUID only exists in secure contexts, getRandomValues everywhere. */
export function newId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const FINAL_CLOSE_CODES = new Set([4400, 4401, 4403, 4404, 4500]); // bad request, auth, membership, no such session, unsendable
const IN_FLIGHT = new Set(["queued", "active"]);

function matches(filter, turn, me) {
  if (filter.turnId !== undefined) return turn.turnId === filter.turnId;
  if (filter.clientId !== undefined) return turn.clientId === filter.clientId;
  if (filter.all) return true;
  return turn.clientId === me; // {own: true}, the default
}

export class ChatTransport extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.sessionId
   * @param {string} [options.baseUrl] where the site lives (default: this page's origin)
   * @param {number} [options.commandTimeout] ms to wait for an ack (default 15000)
   * @param {number} [options.heartbeat] ms between pings that detect a dead socket (default 20000)
   */
  constructor({ sessionId, baseUrl = location.origin, commandTimeout = 15000, heartbeat = 20000 }) {
    super();
    this.sessionId = sessionId;
    this.baseUrl = baseUrl;
    this.commandTimeout = commandTimeout;
    this.heartbeat = heartbeat;
    this.state = "idle"; // idle | connecting | open | reconnecting | closed
    this.closeCode = null;
    this.deletedBy = null; // who deleted the session (`session.deleted`): nothing to reconnect to
    this.clientId = null;
    this.connectionId = null;
    this.lastSeq = null; // null until the first snapshot: then resume from it
    this.tree = new ConversationTree();
    this.turns = new Map(); // turnId -> {turnId, clientId, status, reason, error}
    this.activeTurns = new Map(); // clientId -> Set(turnId), live
    this.online = [];
    this.session = null; // {title, owner, model, modelOptions, policy}: applySession(), then events
    this.members = null; // [clientId]: applySession(), then member events
    this.outbox = new Map(); // ref -> a send not acknowledged yet: {ref, turnId, messageId, text, options, sent}
    this._sessionEvents = []; // the session and member events applied, to replay over an older load
    this.stats = { snapshots: 0, resumes: 0, gaps: 0, duplicates: 0 }; // how this device caught up
    this._ws = null;
    this._pending = new Map(); // ref -> {frame, resolve, reject, timer}
    this._attempt = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._closing = false;
    this._ready = null;
    this._onOnline = () => this._reconnectNow();
    this._onOffline = () => this._drop();
  }

  // --- connection -------------------------------------------------------------------------

  /** Open the socket; resolves once the state is current (snapshot or missed events applied). */
  connect() {
    this._closing = false;
    addEventListener("online", this._onOnline);
    addEventListener("offline", this._onOffline);
    this._open();
    return this.ready();
  }

  /** A promise for the next moment the connection is open and caught up. */
  ready() {
    if (this.state === "open") return Promise.resolve();
    if (!this._ready) {
      let resolve, reject;
      const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
      this._ready = { promise, resolve, reject };
    }
    return this._ready.promise;
  }

  _url() {
    const url = new URL(`/ws/sessions/${encodeURIComponent(this.sessionId)}/`, this.baseUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.lastSeq !== null) url.searchParams.set("after", String(this.lastSeq));
    return url.toString();
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, closeCode: this.closeCode } }));
  }

  _open() {
    clearTimeout(this._retryTimer);
    this._setState(this._attempt === 0 && this.lastSeq === null ? "connecting" : "reconnecting");
    const ws = new WebSocket(this._url());
    this._ws = ws;
    ws.onmessage = (message) => {
      if (ws !== this._ws) return;
      this._lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      this._onFrame(frame);
    };
    ws.onclose = (close) => {
      if (ws !== this._ws) return;
      this._ws = null;
      this._onClosed(close.code);
    };
  }

  _onClosed(code) {
    clearInterval(this._pingTimer);
    this._unsent();
    this.closeCode = code;
    if (this._closing || FINAL_CLOSE_CODES.has(code) || this.deletedBy !== null) {
      this._finish(code);
      return;
    }
    this._setState("reconnecting");
    // Exponential backoff with jitter, so that many devices do not return in lockstep. While
    // the browser says it is offline only a slow retry runs: the "online" event resumes at once.
    const backoff = Math.min(10000, 250 * 2 ** this._attempt) * (0.5 + Math.random() / 2);
    const delay = navigator.onLine === false ? 10000 : backoff;
    this._attempt += 1;
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  _finish(code) {
    clearTimeout(this._retryTimer);
    removeEventListener("online", this._onOnline);
    removeEventListener("offline", this._onOffline);
    for (const [ref, pending] of this._pending) {
      clearTimeout(pending.timer);
      pending.reject(new ChatError("closed", `connection closed (${code})`));
      this._pending.delete(ref);
    }
    if (this._ready) {
      this._ready.reject(new ChatError("closed", `connection closed (${code})`));
      this._ready = null;
    }
    this._setState("closed");
  }

  /** Drop the socket as a network failure would (the transport then resumes by itself). */
  _drop() {
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      ws.onmessage = ws.onclose = null;
      ws.close();
      this._onClosed(1006);
    }
  }

  _reconnectNow() {
    if (this.state === "reconnecting" && !this._ws) {
      this._attempt = 0;
      this._open();
    }
  }

  /** Became current: start pinging, (re-)send the commands the last socket never answered. */
  _caughtUp() {
    this._attempt = 0;
    this._setState("open");
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => this._ping(), this.heartbeat);
    for (const pending of this._pending.values()) this._write(pending);
    if (this._ready) {
      this._ready.resolve();
      this._ready = null;
    }
  }

  _ping() {
    // A socket can die without a close event (sleeping laptop, NAT timeout): if a ping is
    // not answered within half the heartbeat, treat the socket as dropped.
    const sentAt = Date.now();
    this._ws?.send(JSON.stringify({ type: "ping" }));
    setTimeout(() => {
      if (this.state === "open" && (this._lastFrameAt || 0) < sentAt) this._drop();
    }, this.heartbeat / 2);
  }

  /**
   * Close this device. `cancel`: true (own turns) or a filter, cancelled on the way out; a
   * plain close or a dropped connection cancels nothing.
   */
  async close({ cancel } = {}) {
    const frame = { type: "close" };
    if (cancel) frame.cancel = cancel === true ? { own: true } : cancel;
    let reply = null;
    if (this.state === "open" && this._ws) {
      try {
        reply = await this._command(frame, { timeout: 5000 });
      } catch {
        // closing anyway
      }
    }
    this._closing = true;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close(1000);
    }
    this._finish(1000);
    return reply;
  }

  // --- applying frames --------------------------------------------------------------------

  _onFrame(frame) {
    const kind = frame.type;
    if (kind === "hello") {
      this.clientId = frame.clientId;
      this.connectionId = frame.connectionId;
      this.activeTurns = new Map(Object.entries(frame.activeTurns || {}).map(([c, t]) => [c, new Set(t)]));
      if (frame.online) this.online = frame.online;
      this.dispatchEvent(new CustomEvent("hello", { detail: frame }));
      if (frame.resumed) {
        this.stats.resumes += 1;
        this._changed({ type: "hello" });
        this._caughtUp();
      }
    } else if (kind === "snapshot") {
      this._applySnapshot(frame);
      this._caughtUp();
    } else if ((kind === "ack" || kind === "error" || kind === "pong") && this._pending.has(String(frame.ref))) {
      const pending = this._pending.get(String(frame.ref));
      this._pending.delete(String(frame.ref));
      clearTimeout(pending.timer);
      if (kind === "error") pending.reject(new ChatError(frame.code, frame.message));
      else pending.resolve(frame);
    } else if (kind === "error") {
      this.dispatchEvent(new CustomEvent("servererror", { detail: frame }));
    } else if (typeof frame.seq === "number") {
      this.applyEvent(frame);
    } else if (kind === "presence") {
      this.online = frame.online || []; // presence may also come unnumbered
      this._changed(frame);
    }
  }

  /** Has this turn's `turn.end` been applied? A `turn.start` or `turn.queued` after it is stale. */
  _hasEnded(turnId) {
    const status = this.turns.get(turnId)?.status;
    return status === "complete" || status === "cancelled" || status === "error";
  }

  _applySnapshot(snapshot) {
    this.stats.snapshots += 1;
    this.lastSeq = snapshot.lastSeq;
    const picked = new Map(this.tree.picked); // the reader's picks survive a resync
    this.tree.clear();
    for (const [slot, id] of picked) this.tree.picked.set(slot, id);
    for (const node of snapshot.messages) this.tree.upsert({ ...node });
    this.turns = new Map(snapshot.turns.map((t) => [t.turnId, { ...t }]));
    this.activeTurns = new Map();
    for (const t of snapshot.turns) if (t.status === "active") this._activeAdd(t.clientId, t.turnId);
    this.dispatchEvent(new CustomEvent("snapshot", { detail: snapshot }));
    this._changed({ type: "snapshot" });
  }

  /**
   * Apply one numbered event. Events at or below `lastSeq` are duplicates and are dropped;
   * exported so that a page (or a test) can feed events it got elsewhere.
   */
  applyEvent(event) {
    if (this.lastSeq !== null && event.seq <= this.lastSeq) {
      this.stats.duplicates += 1;
      return false;
    }
    if (this.lastSeq !== null && event.seq !== this.lastSeq + 1) {
      // The server promises no gap; if one shows anyway, resume from what was applied
      // rather than show a conversation with a hole in it.
      this.stats.gaps += 1;
      this._drop();
      return false;
    }
    this.lastSeq = event.seq;
    switch (event.type) {
      case "message": {
        const node = { ...event.message };
        const known = this.tree.get(node.id);
        // A node relayed again must not lose streamed text it does not carry yet.
        if (known && (known.contentSeq || 0) > (node.contentSeq || 0)) {
          node.parts = known.parts;
          node.contentSeq = known.contentSeq;
        }
        this.tree.upsert(node);
        break;
      }
      case "delta":
        this._applyDelta(event);
        break;
      case "tool.call":
      case "tool.result":
        this._applyPart(event);
        break;
      case "turn.queued":
        if (this._hasEnded(event.turnId)) break; // a turn's end is final (docs/protocol.md)
        this._turn(event.turnId, {
          clientId: event.clientId, status: "queued", position: event.position, interrupts: event.interrupts || null,
          parentTurnId: event.parentTurnId || null,
        });
        break;
      case "turn.start":
        if (this._hasEnded(event.turnId)) break;
        this._turn(event.turnId, { clientId: event.clientId, status: "active", ...(event.model && { model: event.model }) });
        this._activeAdd(event.clientId, event.turnId);
        this._setNodeStatus(event.turnId, "queued", "streaming");
        break;
      case "turn.end":
        this._turn(event.turnId, {
          clientId: event.clientId, status: event.reason, reason: event.reason, error: event.error || null,
          cancelledBy: event.cancelledBy || null, endedAt: event.at,
        });
        this._activeRemove(event.clientId, event.turnId);
        this._setNodeStatus(event.turnId, null, event.reason);
        break;
      case "presence":
        this.online = event.online || [];
        break;
      case "cancel":
        break; // an announcement: the state changes with the `turn.end` events that follow
      case "session.deleted":
        // The last event: its turns stopped (no `turn.end` follows) and the server closes
        // with 4404; whatever else ends the connection now, it is not resumed.
        this.deletedBy = event.clientId;
        for (const turn of this.inFlight()) {
          this._turn(turn.turnId, { status: "cancelled", reason: "cancelled", endedAt: event.at });
          this._activeRemove(turn.clientId, turn.turnId);
          this._setNodeStatus(turn.turnId, null, "cancelled");
        }
        break;
      case "session.updated":
      case "member.joined":
      case "member.left":
        this._sessionEvents.push(event);
        if (this._sessionEvents.length > 100) this._sessionEvents.shift();
        this._applySessionEvent(event);
        break;
      default:
        break; // a type this transport does not know yet changes no state; listeners still see it
    }
    this.dispatchEvent(new CustomEvent("event", { detail: event }));
    this._changed(event);
    return true;
  }

  /** The answer node a delta or a tool part belongs to (a placeholder if not known yet). */
  _answerNode(event) {
    return (
      this.tree.get(event.messageId) ||
      this.tree.upsert({
        id: event.messageId, parent: null, role: "assistant", parts: [], turnId: event.turnId,
        status: "streaming", contentSeq: 0,
      })
    );
  }

  _applyDelta(event) {
    const node = this._answerNode(event);
    if (event.seq <= (node.contentSeq || 0)) return; // already part of the snapshot's text
    const type = event.part || "text";
    const parts = node.parts.slice();
    const last = parts[parts.length - 1];
    if (last && last.type === type) parts[parts.length - 1] = { ...last, text: last.text + event.text };
    else parts.push({ type, text: event.text });
    node.parts = parts;
    node.contentSeq = event.seq;
  }

  /** `tool.call` / `tool.result`: the event's whole part is the answer's next part. */
  _applyPart(event) {
    const node = this._answerNode(event);
    if (event.seq <= (node.contentSeq || 0) || !event.part) return; // already in the node's parts
    node.parts = [...node.parts, { ...event.part }];
    node.contentSeq = event.seq;
  }

  _turn(turnId, fields) {
    const turn = this.turns.get(turnId) || { turnId };
    Object.assign(turn, fields);
    this.turns.set(turnId, turn);
  }

  _setNodeStatus(turnId, from, to) {
    for (const node of this.tree.nodes.values()) {
      if (node.turnId !== turnId || node.role !== "assistant") continue;
      if (from ? node.status === from : node.status === "streaming" || node.status === "queued") node.status = to;
    }
  }

  _activeAdd(clientId, turnId) {
    if (!this.activeTurns.has(clientId)) this.activeTurns.set(clientId, new Set());
    this.activeTurns.get(clientId).add(turnId);
  }

  _activeRemove(clientId, turnId) {
    const set = this.activeTurns.get(clientId);
    if (!set) return;
    set.delete(turnId);
    if (!set.size) this.activeTurns.delete(clientId);
  }

  _changed(event) {
    this.dispatchEvent(new CustomEvent("change", { detail: event }));
  }

  /**
   * The session's settings and members as read over HTTP (`GET /api/sessions/{id}`, with
   * its `lastSeq`); the session and member events keep them live from then on. A load read
   * before events this device already applied is brought up to date with them.
   */
  applySession(payload) {
    this.session = {
      title: payload.title, owner: payload.owner, model: payload.model, modelOptions: payload.modelOptions || {},
      policy: payload.policy,
    };
    this.members = [...(payload.members || [])];
    for (const event of this._sessionEvents) if (event.seq > (payload.lastSeq ?? 0)) this._applySessionEvent(event);
    this._changed({ type: "session" });
  }

  _applySessionEvent(event) {
    if (event.type === "session.updated") {
      if (!this.session) return; // the load that follows carries it
      const { title, policy, model, modelOptions, agents } = event;
      Object.assign(this.session, { title, policy, model, modelOptions });
      if (agents) this.session.agents = agents; // (events from before agents were announced carry none)
    } else if (this.members) {
      const others = this.members.filter((name) => name !== event.clientId);
      this.members = event.type === "member.joined" ? [...others, event.clientId] : others;
    }
  }

  // --- reading state ----------------------------------------------------------------------

  /** Turns queued or active, optionally only those matching a filter. */
  inFlight(filter = { all: true }) {
    return [...this.turns.values()].filter((t) => IN_FLIGHT.has(t.status) && matches(filter, t, this.clientId));
  }

  /** A queued turn's place in the session's queue now (1: next), or null. `turn.queued` says
   * the place a turn took; no event says when it moves up (docs/protocol.md), so it is counted
   * here as the server counts it: the interrupting sends waiting first, then the other queued
   * turns in the order they were queued (sub-agents' turns go with their parent's). */
  queuePosition(turnId) {
    const turn = this.turns.get(turnId);
    if (turn?.status !== "queued" || turn.parentTurnId || turn.interrupts?.length) return null;
    let ahead = 0;
    let before = true;
    for (const other of this.turns.values()) {
      if (other === turn) before = false;
      else if (other.status === "queued" && !other.parentTurnId && (before || other.interrupts?.length)) ahead += 1;
    }
    return ahead + 1;
  }

  /** Whether the connection ended for good (a final close code, `close()`, the session
   * deleted): nothing will carry a command any more, so commands are refused at once. */
  get ended() {
    return this.state === "closed" || this.deletedBy !== null;
  }

  /** The assistant node of a turn, if known. */
  answerOf(turnId) {
    for (const node of this.tree.nodes.values()) if (node.turnId === turnId && node.role === "assistant") return node;
    return undefined;
  }

  // --- commands ---------------------------------------------------------------------------

  _command(frame, { timeout = this.commandTimeout, ref = newId() } = {}) {
    if (this.ended) return Promise.reject(new ChatError("closed", `connection closed (${this.closeCode})`));
    const full = { ...frame, ref };
    return new Promise((resolve, reject) => {
      const pending = { frame: full, resolve, reject, timer: null, timeout };
      this._pending.set(ref, pending);
      // While disconnected the frame waits in `_pending`; `_caughtUp` sends it.
      if (this.state === "open" && this._ws?.readyState === WebSocket.OPEN) this._write(pending);
    });
  }

  /** Put a command on the socket; from then on, its answer is awaited `timeout` ms at most. */
  _write(pending) {
    this._ws.send(JSON.stringify(pending.frame));
    const ref = pending.frame.ref;
    clearTimeout(pending.timer);
    pending.timer = setTimeout(() => {
      this._pending.delete(ref);
      this.outbox.delete(ref);
      pending.reject(new ChatError("timeout", "no answer from the server"));
      this._changed({ type: "outbox" });
    }, pending.timeout);
    const sending = this.outbox.get(ref);
    if (sending && !sending.sent) {
      sending.sent = true;
      this._changed({ type: "outbox" });
    }
  }

  /** The socket is gone: what was written and not answered waits to be written again. */
  _unsent() {
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.timer = null;
    }
    for (const sending of this.outbox.values()) sending.sent = false;
    if (this.outbox.size) this._changed({ type: "outbox" });
  }

  /**
   * Take back a send that has not reached the server yet (it waits for the connection):
   * true if it was taken back (its promise rejects with code `withdrawn`).
   */
  withdraw(ref) {
    const sending = this.outbox.get(ref);
    const pending = this._pending.get(ref);
    if (!sending || sending.sent || !pending) return false;
    this._pending.delete(ref);
    this.outbox.delete(ref);
    pending.reject(new ChatError("withdrawn", "not sent"));
    this._changed({ type: "outbox" });
    return true;
  }

  /**
   * Send a user message (a string or {text}) or a regenerate, and start a turn.
   * options: {policy, parent, forkOf, regenerate, turnId, messageId}. Resolves with a
   * TurnHandle once the server acknowledged; rejects with ChatError (busy, queue_full, ...).
   */
  async send(text, options = {}) {
    const turnId = options.turnId || newId();
    const frame = { type: "send", turnId };
    if (options.regenerate) frame.regenerate = options.regenerate;
    else frame.messages = [{ id: options.messageId || newId(), role: "user", parts: [{ type: "text", text }] }];
    for (const key of ["parent", "forkOf", "policy"]) if (options[key]) frame[key] = options[key];
    // Shown in `outbox` until the server answers: a page can show the message at once,
    // and as waiting while the connection is down (it is sent when it is back).
    const ref = newId();
    this.outbox.set(ref, {
      ref, turnId, messageId: frame.messages?.[0]?.id ?? null, text, options: { ...options }, sent: false,
      createdAt: Date.now(),
    });
    this._changed({ type: "outbox" });
    try {
      return new TurnHandle(this, await this._command(frame, { ref }));
    } finally {
      if (this.outbox.delete(ref)) this._changed({ type: "outbox" });
    }
  }

  /**
   * Cancel turns matching one filter: {own: true} (default), {turnId}, {clientId}, {all: true}.
   * Resolves with {cancelled, rejected, pending}; a refused cancel is in `rejected`.
   */
  cancel(filter = { own: true }) {
    return this._command({ type: "cancel", filter });
  }

  /**
   * Resolve once no turn matching the filter is queued or active (with those that ended).
   * A {turnId} not seen yet is waited for. Rejects with ChatError("timeout") after `timeout` ms.
   */
  waitForTurn(filter = { own: true }, { timeout = 60000 } = {}) {
    const watched = new Set(this.inFlight(filter).map((t) => t.turnId));
    if (filter.turnId !== undefined) watched.add(filter.turnId);
    return new Promise((resolve, reject) => {
      const check = () => {
        for (const t of this.inFlight(filter)) watched.add(t.turnId);
        const ended = [...watched].map((id) => this.turns.get(id));
        if (ended.every((t) => t && !IN_FLIGHT.has(t.status))) {
          done();
          resolve(ended);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new ChatError("timeout", "turns still running"));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        this.removeEventListener("change", check);
      };
      this.addEventListener("change", check);
      check();
    });
  }

  /**
   * The text of a turn's answer as it streams: yields what is already there, then each new
   * piece, and returns at the turn's end.
   */
  async *stream(turnId, { part = "text" } = {}) {
    // The answer node's text is the truth (deltas, snapshots after a resync): yield what
    // it holds beyond what was already yielded, so nothing shows twice or goes missing.
    let wake = null;
    const onChange = () => wake?.();
    this.addEventListener("change", onChange);
    try {
      let sent = 0;
      while (true) {
        const answer = this.answerOf(turnId);
        const text = (answer?.parts || []).filter((p) => p.type === part).map((p) => p.text).join("");
        if (text.length > sent) {
          const piece = text.slice(sent);
          sent = text.length;
          yield piece;
          continue;
        }
        const turn = this.turns.get(turnId);
        if (turn && !IN_FLIGHT.has(turn.status)) return;
        await new Promise((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      this.removeEventListener("change", onChange);
    }
  }
}

/** A turn as this device sees it. */
export class TurnHandle {
  constructor(transport, ack) {
    this.transport = transport;
    this.ack = ack;
    this.turnId = ack.turnId;
    this.status = ack.status;
    this.messageIds = ack.messageIds || [];
  }

  stream(options) {
    return this.transport.stream(this.turnId, options);
  }

  /** Resolves with the turn once it ended ({status, reason, error}). */
  async end(options) {
    const [turn] = await this.transport.waitForTurn({ turnId: this.turnId }, options);
    return turn;
  }

  cancel() {
    return this.transport.cancel({ turnId: this.turnId });
  }
}
