// Renders the selected branch of the conversation into the message log.
//
// Elements are kept per message id and updated in place, so a streaming answer only has its
// body re-rendered and focus on a control (Stop, ‹ ›) survives every update. User text is
// set with textContent; assistant text goes through the safe Markdown renderer.

import { renderMarkdown } from "./markdown.js";
import { textOf } from "./tree.js";

const STATUS_LABEL = {
  queued: "Queued",
  streaming: "Answering…",
  cancelled: "Stopped",
  error: "Failed",
};

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
   * @param {object} actions {stop(turnId), regenerate(id), edit(id, text), showSibling(id)}
   */
  constructor(container, chat, me, actions) {
    this.container = container;
    this.chat = chat;
    this.me = me;
    this.actions = actions;
    this.elements = new Map(); // message id -> {root, ...parts, rendered}
    this.editing = null; // id of the user message being edited
  }

  render() {
    const nearBottom = this.container.scrollHeight - this.container.scrollTop - this.container.clientHeight < 80;
    const branch = this.chat.tree.branch();
    const shown = new Set(branch.map((n) => n.id));
    for (const [id, view] of this.elements) {
      if (!shown.has(id)) {
        view.root.remove();
        this.elements.delete(id);
      }
    }
    let previous = null;
    for (const node of branch) {
      const view = this.elements.get(node.id) || this._create(node);
      this._update(view, node);
      const expected = previous ? previous.nextSibling : this.container.firstChild;
      if (expected !== view.root) this.container.insertBefore(view.root, expected);
      previous = view.root;
    }
    this.container.classList.toggle("empty", branch.length === 0);
    if (nearBottom) this.container.scrollTop = this.container.scrollHeight;
  }

  _create(node) {
    const who = el("span", { className: "who" });
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
      el("header", {}, who, badge, siblings),
      reasoning,
      body,
      actions,
    );
    const view = { root, who, badge, siblings, prev, next, count, body, reasoning, actions, text: null, actionKey: null };
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

  _update(view, node) {
    const turn = node.turnId ? this.chat.turns.get(node.turnId) : undefined;
    const owner = node.clientId || turn?.clientId || "";
    const mine = owner === this.me;
    if (node.role === "user") view.who.textContent = mine ? `${owner} (you)` : owner;
    else view.who.textContent = owner && !mine ? `Assistant · for ${owner}` : "Assistant";

    const status = node.role === "assistant" ? node.status : null;
    view.root.dataset.status = node.status || "";
    view.root.setAttribute("aria-busy", String(status === "streaming" || status === "queued"));
    let label = STATUS_LABEL[status] || "";
    if (status === "error" && turn?.error?.message) label = `Failed: ${turn.error.message}`;
    if (status === "queued" && turn?.position) label = `Queued (#${turn.position})`;
    view.badge.hidden = !label;
    view.badge.textContent = label;

    const sib = this.chat.tree.siblings(node.id);
    view.siblings.hidden = sib.count < 2;
    view.count.textContent = `${sib.index}/${sib.count}`;
    view.prev.disabled = !sib.prev;
    view.next.disabled = !sib.next;

    if (this.editing !== node.id) this._updateBody(view, node);
    this._updateActions(view, node, status);
  }

  _updateBody(view, node) {
    const text = textOf(node);
    const thinking = (node.parts || []).filter((p) => p.type === "reasoning").map((p) => p.text).join("");
    view.reasoning.hidden = !thinking;
    if (thinking) view.reasoning.lastChild.textContent = thinking;
    if (text === view.text && !view.body.querySelector("form")) return;
    view.text = text;
    if (node.role === "user") {
      view.body.textContent = text; // plain text, shown as typed (white-space: pre-wrap)
    } else if (!text && (node.status === "streaming" || node.status === "queued")) {
      view.body.replaceChildren(el("span", { className: "typing", textContent: "…", "aria-label": "waiting for the answer" }));
      view.text = null;
    } else {
      view.body.replaceChildren(renderMarkdown(text));
    }
  }

  _updateActions(view, node, status) {
    const key = `${node.role}:${status}:${this.editing === node.id}`;
    if (key === view.actionKey) return;
    view.actionKey = key;
    const buttons = [];
    if (node.role === "user") {
      // Only the author edits a message (an edit forks the conversation in their name).
      if (node.clientId === this.me && this.editing !== node.id) {
        buttons.push(this._button("Edit", "edit", () => this._startEdit(view, node)));
      }
    } else if (status === "streaming") {
      buttons.push(this._button("Stop", "stop", () => this.actions.stop(node.turnId), "Stop this answer"));
    } else if (status === "queued") {
      buttons.push(this._button("Cancel", "cancel-queued", () => this.actions.stop(node.turnId), "Cancel this queued message"));
    } else if (node.role === "assistant") {
      buttons.push(this._button("Regenerate", "regenerate", () => this.actions.regenerate(node.id)));
    }
    view.actions.replaceChildren(...buttons);
  }

  _button(text, name, onClick, label) {
    const button = el("button", { type: "button", className: `act act-${name}`, textContent: text });
    if (label) button.setAttribute("aria-label", label);
    button.addEventListener("click", onClick);
    return button;
  }

  _startEdit(view, node) {
    this.editing = node.id;
    const field = el("textarea", { className: "edit-input", value: textOf(node), rows: 3 });
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
