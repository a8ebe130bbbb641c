// Renders the conversation's timeline (tree.js) into the message log: every exchange, those
// that ran concurrently included, each with who sent it, its answer streaming in place, the
// model answering, its status and its own Stop; versions (edits, regenerations) behind a
// ‹ n/m › pager. Messages this device is still sending (the transport's outbox) follow, shown
// as sending, or as waiting while the connection is down.
//
// Elements are kept per message id and updated in place, so a streaming answer only has its
// body re-rendered and focus on a control (Stop, ‹ ›) survives every update. User text is
// set with textContent; assistant text goes through the safe Markdown renderer. An answer's
// parts are shown in their order: text, and the server-side tool calls and their results
// (names and JSON set as text, never parsed as HTML); reasoning sits above, folded.

import { renderMarkdown } from "./markdown.js";
import { textOf } from "./tree.js";

const STATUS_LABEL = {
  queued: "Queued",
  streaming: "Answering…",
  cancelled: "Stopped",
  error: "Failed",
};

const TOOL_LABEL = { "tool-call": "Tool call", "tool-result": "Tool result" };
const INLINE_JSON = 80; // longer arguments or results get a block of their own

/** A JSON value as readable text: one line when short, indented otherwise; strings as they are. */
export function formatValue(value) {
  if (value === undefined) return { text: "", block: false };
  if (typeof value === "string") return { text: value, block: value.length > INLINE_JSON || value.includes("\n") };
  let line;
  try {
    line = JSON.stringify(value, null, 1).replace(/\n\s*/g, " "); // no raw newline sits inside a JSON string
  } catch {
    line = String(value);
  }
  if (line.length <= INLINE_JSON) return { text: line, block: false };
  return { text: JSON.stringify(value, null, 2), block: true };
}

/**
 * What an answer's body shows, in order: runs of text (joined), tool calls and tool results.
 * Reasoning is shown apart; part types this page does not know are left out. Each segment
 * has a `key` that changes when what it shows changes.
 */
export function bodySegments(node) {
  const segments = [];
  for (const part of node.parts || []) {
    if (part.type === "text") {
      const last = segments[segments.length - 1];
      if (last && last.type === "text") last.text += part.text || "";
      else segments.push({ type: "text", text: part.text || "" });
    } else if (part.type === "tool-call" || part.type === "tool-result") {
      segments.push({ type: part.type, part });
    }
  }
  for (const segment of segments) {
    segment.key = segment.type === "text" ? `text:${segment.text}` : `${segment.type}:${JSON.stringify(segment.part)}`;
  }
  return segments.filter((segment) => segment.type !== "text" || segment.text);
}

function el(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("aria-") || key === "role") element.setAttribute(key, value);
    else element[key] = value;
  }
  element.append(...children);
  return element;
}

export class MessagesView {
  /**
   * @param {HTMLElement} container the log element
   * @param {import("./transport.js").ChatTransport} chat
   * @param {string} me this user's clientId
   * @param {object} actions {stop(turnId), regenerate(id), edit(id, text), showSibling(id), withdraw(ref)}
   */
  constructor(container, chat, me, actions) {
    this.container = container;
    this.chat = chat;
    this.me = me;
    this.actions = actions;
    this.elements = new Map(); // message id (or "pending:" + ref) -> {root, ...parts, rendered}
    this.editing = null; // id of the user message being edited
  }

  /** Whether the log is scrolled to (near) its end: then it follows what arrives. */
  atEnd() {
    return this.container.scrollHeight - this.container.scrollTop - this.container.clientHeight < 80;
  }

  scrollToEnd() {
    this.container.scrollTop = this.container.scrollHeight;
  }

  /** Bring a shown message into view. */
  reveal(id) {
    this.elements.get(id)?.root.scrollIntoView({ block: "nearest" });
  }

  render() {
    const following = this.atEnd();
    const shown = this.chat.tree.timeline();
    const sending = [...this.chat.outbox.values()].filter((s) => !s.messageId || !this.chat.tree.get(s.messageId));
    const wanted = new Set([...shown.map((n) => n.id), ...sending.map((s) => `pending:${s.ref}`)]);
    for (const [id, view] of this.elements) {
      if (!wanted.has(id)) {
        view.root.remove();
        this.elements.delete(id);
      }
    }
    let previous = null;
    const place = (view) => {
      const expected = previous ? previous.nextSibling : this.container.firstChild;
      if (expected !== view.root) this.container.insertBefore(view.root, expected);
      previous = view.root;
    };
    for (const node of shown) {
      const view = this.elements.get(node.id) || this._create(node);
      this._update(view, node);
      place(view);
    }
    for (const item of sending) {
      const key = `pending:${item.ref}`;
      const view = this.elements.get(key) || this._createPending(item, key);
      this._updatePending(view, item);
      place(view);
    }
    this.container.classList.toggle("empty", shown.length + sending.length === 0);
    if (following) this.scrollToEnd();
  }

  _create(node) {
    const who = el("span", { className: "who" });
    const model = el("span", { className: "model", hidden: true });
    const badge = el("span", { className: "badge", hidden: true });
    const prev = el("button", { type: "button", className: "sib-prev", textContent: "‹", "aria-label": "Previous version" });
    const next = el("button", { type: "button", className: "sib-next", textContent: "›", "aria-label": "Next version" });
    const count = el("span", { className: "sib-count" });
    const siblings = el("nav", { className: "siblings", hidden: true, "aria-label": "Versions of this message" }, prev, count, next);
    const body = el("div", { className: "body" });
    const reasoning = el("details", { className: "reasoning", hidden: true }, el("summary", { textContent: "Reasoning" }), el("div"));
    const actions = el("div", { className: "actions" });
    const root = el(
      "article",
      { className: `msg msg-${node.role}`, dataset: { id: node.id, role: node.role } },
      el("header", {}, who, model, badge, siblings),
      reasoning,
      body,
      actions,
    );
    const view = {
      root, who, model, badge, siblings, prev, next, count, body, reasoning, actions, text: null, segments: [],
      actionKey: null,
    };
    prev.addEventListener("click", () => this._goSibling(view, "prev"));
    next.addEventListener("click", () => this._goSibling(view, "next"));
    this.elements.set(node.id, view);
    return view;
  }

  _goSibling(view, direction) {
    const target = this.chat.tree.siblings(view.root.dataset.id)[direction];
    if (!target) return;
    this.actions.showSibling(target);
    // The sibling is another element: keep the keyboard where it was.
    const shown = this.elements.get(target);
    const button = shown && (shown[direction].disabled ? shown[direction === "prev" ? "next" : "prev"] : shown[direction]);
    button?.focus();
  }

  /** A name as this page shows it: "you" for this user, a clientId as it is otherwise
   * (a user's name, or an agent's `agent:<name>`). */
  _name(clientId, { capital = false } = {}) {
    if (clientId === this.me) return capital ? "You" : "you";
    return clientId || "someone";
  }

  _update(view, node) {
    const turn = node.turnId ? this.chat.turns.get(node.turnId) : undefined;
    const owner = node.clientId || turn?.clientId || "";
    const mine = owner === this.me;
    view.root.dataset.client = owner;
    view.root.classList.toggle("mine", mine);
    // An agent's node (clientId agent:<name>: a sub-agent's answer, an orchestrator's summary)
    // is labelled with the agent that wrote it (docs/agents.md).
    const agent = owner.startsWith("agent:") ? owner.slice("agent:".length) : "";
    view.root.dataset.agent = agent;
    if (agent) view.who.textContent = `${agent} · agent`;
    else if (node.role === "user") view.who.textContent = mine ? `${owner} (you)` : owner;
    else view.who.textContent = owner && !mine ? `Assistant · for ${owner}` : "Assistant";
    if (node.role === "assistant") {
      const model = turn?.model || (node.status === "queued" ? this.chat.session?.model : "") || "";
      view.model.hidden = !model || model === owner; // an agent's turn names its agent as its model
      view.model.textContent = model;
    }

    const status = node.role === "assistant" ? node.status : null;
    view.root.dataset.status = node.status || "";
    view.root.setAttribute("aria-busy", String(status === "streaming" || status === "queued"));
    const label = this._statusLabel(node, status, turn);
    view.root.dataset.interrupted = String(label.startsWith("Interrupted"));
    view.badge.hidden = !label;
    view.badge.textContent = label;

    const sib = this.chat.tree.siblings(node.id);
    view.siblings.hidden = sib.count < 2;
    view.count.textContent = `${sib.index}/${sib.count}`;
    view.prev.disabled = !sib.prev;
    view.next.disabled = !sib.next;

    if (this.editing !== node.id) this._updateBody(view, node);
    this._updateActions(view, node, status, owner);
  }

  /** What became of an answer, said so that people can tell who stopped it and why. */
  _statusLabel(node, status, turn) {
    if (status === "queued") {
      if (turn?.interrupts?.length) return "Starting once the interrupted answer stops";
      const position = this.chat.queuePosition(node.turnId);
      return position ? `Queued (#${position})` : STATUS_LABEL.queued;
    }
    if (status === "error") return turn?.error?.message ? `Failed: ${turn.error.message}` : STATUS_LABEL.error;
    if (status !== "cancelled") return STATUS_LABEL[status] || "";
    const by = turn?.cancelledBy;
    const interrupter = this._interruptedBy(node, turn);
    if (interrupter) return `Interrupted by ${interrupter === this.me ? "your" : `${interrupter}'s`} next message`;
    const unstarted = !(node.parts || []).length;
    if (by) return `${unstarted ? "Cancelled" : "Stopped"} by ${this._name(by)}${unstarted ? " before it started" : ""}`;
    return unstarted ? "Cancelled before it started" : STATUS_LABEL.cancelled;
  }

  /** The clientId whose interrupting message ended this answer, if one did: a message of the
   * answer's owner that follows it and was sent before the answer ended (an interrupt waits
   * for the turns it interrupts to end), or the turn an interrupting send named. */
  _interruptedBy(node, turn) {
    for (const other of this.chat.turns.values()) {
      if (other.interrupts?.includes(node.turnId)) return other.clientId;
    }
    if (!turn || (turn.cancelledBy && turn.cancelledBy !== turn.clientId)) return null;
    const endedAt = turn.endedAt ?? Infinity;
    const next = this.chat.tree
      .childrenOf(node.id)
      .find((child) => child.role === "user" && child.clientId === turn.clientId && (child.createdAt ?? 0) <= endedAt);
    return next ? next.clientId : null;
  }

  _updateBody(view, node) {
    const thinking = (node.parts || []).filter((p) => p.type === "reasoning").map((p) => p.text).join("");
    view.reasoning.hidden = !thinking;
    if (thinking) view.reasoning.lastChild.textContent = thinking;
    if (node.role === "user") {
      const text = textOf(node);
      if (text === view.text && !view.body.querySelector("form")) return;
      view.text = text;
      view.body.textContent = text; // plain text, shown as typed (white-space: pre-wrap)
      return;
    }
    const segments = bodySegments(node);
    const pending = node.status === "streaming" || node.status === "queued";
    // While the model works after a tool result (or before its first word), say so.
    const waiting = pending && (segments.length === 0 || segments[segments.length - 1].type !== "text");
    const key = `${waiting}|${segments.map((s) => s.key).join("\u0000")}`;
    if (key === view.text && !view.body.querySelector("form")) return;
    view.text = key;
    // Re-render only the segments that changed (while text streams: the last one).
    const before = view.segments || [];
    view.segments = segments.map((segment, i) =>
      before[i]?.key === segment.key ? before[i] : { key: segment.key, nodes: this._renderSegment(segment) },
    );
    const children = view.segments.flatMap((segment) => segment.nodes);
    if (waiting) {
      children.push(el("span", { className: "typing", textContent: "…", "aria-label": "waiting for the answer" }));
    }
    view.body.replaceChildren(...children);
  }
  /** The DOM nodes of one body segment: Markdown for text, a compact block for a tool part. */
  _renderSegment(segment) {
    if (segment.type === "text") return [...renderMarkdown(segment.text).childNodes];
    const part = segment.part;
    const isCall = part.type === "tool-call";
    const failed = !isCall && part.isError === true;
    const label = failed ? "Tool error" : TOOL_LABEL[part.type];
    const name = String(part.name ?? "");
    const value = formatValue(isCall ? part.arguments : part.result);
    const shown = value.block
      ? el("pre", { className: "tool-value" }, el("code", { textContent: value.text }))
      : el("code", { className: "tool-value", textContent: value.text });
    const head = el(
      "p",
      { className: "tool-head" },
      el("strong", { textContent: label }),
      " ",
      el("code", { className: "tool-name", textContent: name }),
    );
    if (!value.block && value.text) head.append(isCall ? " " : " → ", shown);
    const block = el(
      "div",
      {
        className: `tool-part ${isCall ? "tool-call" : "tool-result"}`,
        role: "group",
        "aria-label": `${label}: ${name}`,
        dataset: { part: part.type, toolId: String(part.id ?? ""), error: String(failed) },
      },
      head,
    );
    if (value.block) block.append(shown);
    return [block];
  }

  _updateActions(view, node, status, owner) {
    const ended = this.chat.ended; // nothing will carry a command any more: offered, but disabled
    const key = `${node.role}:${status}:${this.editing === node.id}:${owner}:${ended}`;
    if (key === view.actionKey) return;
    view.actionKey = key;
    const buttons = [];
    const whose = owner === this.me ? "your" : `${owner}'s`;
    if (node.role === "user") {
      // Only the author edits a message (an edit forks the conversation in their name).
      if (node.clientId === this.me && this.editing !== node.id) {
        buttons.push(this._button("Edit", "edit", () => this._startEdit(view, node)));
      }
    } else if (status === "streaming") {
      const stop = this._button("Stop", "stop", () => this.actions.stop(node.turnId), "Stop this answer");
      stop.title = `Stop ${whose} answer`;
      buttons.push(stop);
    } else if (status === "queued") {
      const cancel = this._button("Cancel", "cancel-queued", () => this.actions.stop(node.turnId), "Cancel this queued message");
      cancel.title = `Cancel ${whose} queued message`;
      buttons.push(cancel);
    } else if (node.role === "assistant") {
      buttons.push(this._button("Regenerate", "regenerate", () => this.actions.regenerate(node.id)));
    }
    for (const button of buttons) button.disabled = ended;
    view.actions.replaceChildren(...buttons);
  }

  // --- messages this device is still sending ---------------------------------------------

  _createPending(item, key) {
    const badge = el("span", { className: "badge" });
    const withdraw = this._button("Don't send", "withdraw", () => this.actions.withdraw(item.ref), "Do not send this message");
    const actions = el("div", { className: "actions" }, withdraw);
    const root = el(
      "article",
      { className: "msg msg-user msg-pending mine", dataset: { pending: item.ref, role: "user" } },
      el("header", {}, el("span", { className: "who", textContent: `${this.me} (you)` }), badge),
      el("div", { className: "body", textContent: item.text ?? "Regenerate" }),
      actions,
    );
    const view = { root, badge, withdraw, actions, sent: null };
    this.elements.set(key, view);
    return view;
  }

  _updatePending(view, item) {
    if (view.sent === item.sent) return;
    view.sent = item.sent;
    view.root.dataset.status = item.sent ? "sending" : "waiting";
    view.badge.textContent = item.sent ? "Sending…" : "Not sent yet: waiting for the connection";
    view.actions.hidden = item.sent; // once on its way it can no longer be taken back
  }

  _button(text, name, onClick, label) {
    const button = el("button", { type: "button", className: `act act-${name}`, textContent: text });
    if (label) button.setAttribute("aria-label", label);
    button.addEventListener("click", onClick);
    return button;
  }

  /** Open the edit of message `id` again with `text` (an edit the server refused). */
  editAgain(id, text) {
    const view = this.elements.get(id);
    const node = this.chat.tree.get(id);
    if (view && node && this.editing === null) this._startEdit(view, node, text);
  }

  _startEdit(view, node, text = textOf(node)) {
    this.editing = node.id;
    const field = el("textarea", { className: "edit-input", value: text, rows: 3 });
    const fieldId = `edit-${node.id}`;
    field.id = fieldId;
    const label = el("label", { htmlFor: fieldId, className: "visually-hidden", textContent: "Edit your message" });
    const save = el("button", { type: "submit", className: "act act-save", textContent: "Send edit" });
    const cancel = el("button", { type: "button", className: "act act-cancel-edit", textContent: "Cancel" });
    const form = el("form", { className: "edit-form" }, label, field, el("div", { className: "edit-row" }, save, cancel));
    const finish = () => {
      this.editing = null;
      view.text = null;
      view.actionKey = null;
      this.render();
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = field.value.trim();
      if (!text) return;
      finish();
      this.actions.edit(node.id, text);
    });
    cancel.addEventListener("click", () => {
      finish();
      view.actions.querySelector("button")?.focus();
    });
    field.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation(); // Esc here leaves the edit; it does not stop turns
        cancel.click();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    view.body.replaceChildren(form);
    this._updateActions(view, node, null);
    field.focus();
    field.setSelectionRange(field.value.length, field.value.length);
  }
}
