// The sessions page: list the user's sessions and manage them over the API (create, rename,
// invite a member, leave). The server renders the first list; this script replaces it with
// one that has the controls.

import { api } from "./api.js";

const list = document.getElementById("sessions");
const notice = document.getElementById("sessions-notice");
const me = list.dataset.username;

function say(text, kind = "error") {
  notice.textContent = text;
  notice.dataset.kind = kind;
  notice.hidden = !text;
}

function el(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  Object.assign(element, props);
  element.append(...children);
  return element;
}

/** A one-field form: label, input, button; `run(value)` is awaited, errors are shown. */
function miniForm(labelText, buttonText, id, run, value = "") {
  const input = el("input", { type: "text", id, value, required: true, maxLength: 200 });
  const form = el("form", { className: "mini-form" }, el("label", { htmlFor: id, textContent: labelText }), input,
    el("button", { type: "submit", textContent: buttonText }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await run(input.value.trim());
    } catch (error) {
      say(error.detail || error.message);
    }
  });
  return form;
}

function item(session) {
  const url = `/s/${encodeURIComponent(session.id)}/`;
  const title = session.title || "Untitled";
  const li = el("li", {}, el("a", { href: url, className: "session-link", textContent: title }),
    el("span", { className: "muted", textContent: session.owner === me ? " · yours" : ` · owner ${session.owner}` }));
  li.dataset.sessionId = session.id;
  const details = el("details", { className: "manage" }, el("summary", { textContent: "Manage" }));
  details.querySelector("summary").setAttribute("aria-label", `Manage ${title}`);
  details.append(miniForm("Rename to", "Rename", `rename-${session.id}`, async (value) => {
    await api("PATCH", `/api/sessions/${session.id}`, { title: value });
    say(`Renamed to “${value}”.`, "info");
    await load();
  }, title));
  if (session.owner === me) {
    details.append(miniForm("Invite by username", "Invite", `invite-${session.id}`, async (value) => {
      await api("POST", `/api/sessions/${session.id}/members`, { username: value });
      say(`${value} can now open “${title}”.`, "info");
    }));
  }
  const leave = el("button", { type: "button", className: "danger", textContent: "Leave session" });
  leave.addEventListener("click", async () => {
    if (!confirm(`Leave “${title}”? You will no longer see it.`)) return;
    try {
      await api("DELETE", `/api/sessions/${session.id}/members`);
      say(`You left “${title}”.`, "info");
      await load();
    } catch (error) {
      say(error.detail || error.message);
    }
  });
  details.append(leave);
  li.append(details);
  return li;
}

async function load() {
  const { results } = await api("GET", "/api/sessions");
  list.replaceChildren(...(results.length ? results.map(item) : [el("li", { className: "empty", textContent: "No sessions yet. Create one above." })]));
}

document.getElementById("create-session").addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = event.target.elements.title.value.trim();
  try {
    const session = await api("POST", "/api/sessions", { title });
    location.assign(`/s/${encodeURIComponent(session.id)}/`);
  } catch (error) {
    say(error.detail || error.message);
  }
});

load().catch((error) => say(error.detail || error.message));
