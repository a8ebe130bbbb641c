// The chat page: connects the transport to the message log, the composer, the people list,
// the session menu and the status line. State lives in the transport; this module only
// decides what to show and turns clicks into protocol commands.

import { api } from "./api.js";
import { Composer, POLICY_LABELS } from "./composer.js";
import { MessagesView } from "./messages-view.js";
import { ChatTransport } from "./transport.js";

const root = document.getElementById("chat");
const sessionId = root.dataset.sessionId;
const me = root.dataset.username;
const sessionUrl = `/api/sessions/${encodeURIComponent(sessionId)}`;

const chat = new ChatTransport({ sessionId });
window.chat = chat; // for the console and the browser tests

const $ = (id) => document.getElementById(id);
const notice = $("notice");

const ERRORS = {
  queue_full: "Not sent: the queue is full. Try again when a queued message has been answered.",
  rate_limited: "Not sent: you are sending too fast. Wait a moment and try again.",
  forbidden: "You are not allowed to do that in this session.",
  timeout: "The server did not answer in time. Check the connection and try again.",
  closed: "The connection is closed. Reload the page.",
  network: "The server cannot be reached.",
};

function say(text, kind = "error") {
  notice.textContent = text;
  notice.dataset.kind = kind;
  notice.hidden = !text;
}

function explain(error, policy) {
  if (error.code === "busy") {
    // The sender's own choice refused it (the page always sends one): say so, not "the session".
    return policy === "reject"
      ? "Not sent: you chose “Don't send” while answers are running, and one is. Your message is back in the box: send it when the answer ends, or pick another option."
      : "Not sent: an answer is still running and this session refuses messages meanwhile.";
  }
  return ERRORS[error.code] || `${error.detail || error.message} (${error.code || "error"})`;
}

// --- commands -------------------------------------------------------------------------------

/** Send `text`; true once the server took it. `refused(text)` runs when it was refused
 * (not when the user took it back): what was written is not lost. */
async function send(text, policy, extra = {}, refused = () => {}) {
  if (chat.ended) {
    say(ERRORS.closed); // refused before it shows as sending: nothing can carry it any more
    refused(text);
    return false;
  }
  say("");
  // When nothing is in flight, attach to the end of the timeline on screen; otherwise the
  // server places the message by the policy (beside the running ones, after the queue,
  // after the interrupted answer).
  const options = { policy, ...extra };
  const running = chat.inFlight().filter((t) => t.status === "active");
  const ownRunning = running.some((t) => t.clientId === me);
  const othersRunning = running.some((t) => t.clientId !== me);
  if (!extra.forkOf && !extra.regenerate && chat.inFlight().length === 0) {
    const leaf = chat.tree.leaf();
    if (leaf) options.parent = leaf.id;
  }
  // Sending shows the timeline everyone sees, where this message is the newest.
  chat.tree.showLatest();
  schedule();
  try {
    await chat.send(text, options);
    // Interrupt stops only the sender's running answers: with none, it interrupted nothing.
    if (policy === "interrupt" && ownRunning && othersRunning) {
      say("Your running answers were interrupted; answers of others keep going (Interrupt stops only your own).", "info");
    }
    return true;
  } catch (error) {
    if (error.code !== "withdrawn") {
      say(explain(error, policy));
      refused(text);
    }
    return false;
  }
}

async function cancel(filter) {
  try {
    const outcome = await chat.cancel(filter);
    if (outcome.rejected?.length) {
      const n = outcome.rejected.length;
      say(`Not stopped: you may not stop ${n === 1 ? "this answer" : `${n} of these answers`} (refused by the session's rules).`);
    } else if (!outcome.cancelled?.length && !outcome.pending?.length && filter.turnId) {
      say("That answer had already finished.", "info");
    } else {
      say("");
    }
  } catch (error) {
    say(explain(error));
  }
}

// --- views ----------------------------------------------------------------------------------

const messages = new MessagesView($("messages"), chat, me, {
  stop: (turnId) => cancel({ turnId }),
  regenerate: (id) => send(null, composer.policy.value, { regenerate: id }),
  edit: async (id, text) => {
    // A refused edit opens again with what was written, as a refused message goes back in the box.
    if (await send(text, composer.policy.value, { forkOf: id }, () => messages.editAgain(id, text))) {
      composer.input.focus();
    }
  },
  showSibling: (id) => {
    chat.tree.select(id);
    render(); // now, so that focus can move to the new sibling's control
  },
  withdraw: (ref) => {
    const item = chat.outbox.get(ref);
    if (item && chat.withdraw(ref) && item.text && !composer.input.value) {
      composer.input.value = item.text; // back in the box, to send later or change
      composer.refresh();
    }
  },
});

const composer = new Composer($("composer"), {
  ownTurns: () => chat.inFlight({ own: true }).length,
  send: (text, policy) => send(text, policy),
  stop: () => cancel({ own: true }),
});
if (root.dataset.policy) composer.showDefaultPolicy(root.dataset.policy);

const CONNECTION = {
  idle: "Not connected",
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
};
const CLOSE_REASONS = {
  4401: "Disconnected: you are logged out. Log in again.",
  4403: "Disconnected: you are not a member of this session.",
  4404: "Disconnected: this session does not exist.",
};

let leftElsewhere = false; // this user's `member.left` arrived: the 4403 close that follows is that

function renderConnection() {
  const box = $("connection");
  box.dataset.state = chat.state;
  const offline = chat.state === "reconnecting" && navigator.onLine === false;
  box.querySelector(".label").textContent = offline ? "Offline" : CONNECTION[chat.state] || chat.state;
  $("composer").inert = chat.ended; // nothing will carry a message any more
  if (chat.deletedBy !== null) {
    say(`This session was deleted by ${chat.deletedBy === me ? "you" : chat.deletedBy}.`, "info");
  } else if (chat.state === "closed" && chat.closeCode === 4403 && leftElsewhere) {
    say("You left this session on another device.", "info");
  } else if (chat.state === "closed") say(CLOSE_REASONS[chat.closeCode] || ERRORS.closed);
}

function renderPeople() {
  const online = new Set(chat.online);
  const owner = chat.session?.owner;
  const names = [...new Set([...(chat.members || []), ...online])].sort();
  const key = JSON.stringify([names, [...online].sort(), owner]);
  const list = $("members");
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren(
    ...names.map((name) => {
      const li = document.createElement("li");
      li.dataset.user = name;
      li.dataset.online = String(online.has(name));
      li.textContent = (name === me ? `${name} (you)` : name) + (name === owner ? " · owner" : "");
      const state = document.createElement("span");
      state.className = "visually-hidden";
      state.textContent = online.has(name) ? ", online" : ", offline";
      li.append(state);
      return li;
    }),
  );
}

function renderActivity() {
  const parts = [];
  for (const [clientId, turns] of chat.activeTurns) {
    const who = clientId === me ? "You are" : `${clientId} is`;
    parts.push(`${who} getting ${turns.size === 1 ? "an answer" : `${turns.size} answers`}`);
  }
  const queued = chat.inFlight().filter((t) => t.status === "queued").length;
  if (queued) parts.push(`${queued} queued`);
  const waiting = [...chat.outbox.values()].filter((s) => !s.sent).length;
  if (waiting) parts.push(`${waiting} waiting to be sent`);
  const text = parts.join(" · ");
  const line = $("activity");
  if (line.textContent !== text) line.textContent = text;
  // Everyone's answers at once (the `all` filter): offered when others' answers are in
  // flight too; one's own alone are the composer's Stop.
  $("stop-all").hidden = chat.ended || !chat.inFlight().some((t) => t.clientId !== me);
}

$("stop-all").addEventListener("click", () => {
  if (confirm("Stop every answer in this session, everyone's?")) cancel({ all: true });
});

// --- the session menu: title, the owner's settings, members ------------------------------------

let models = null; // GET /api/models, once the owner opens the menu
let settingsKey = null;

const OPTION_HINTS = {
  demo: 'Demo: {"tokens": 40} answers exactly 40 words, {"rate": 10} streams 10 words a second. Empty: a full demo answer at 30 words a second.',
  other: 'For example {"temperature": 0.3, "system": "Answer briefly."}; also maxTokens, topP, reasoningEffort, thinkingBudget, tools (docs/providers.md).',
};

function renderSession() {
  const session = chat.session;
  if (!session) return;
  const title = session.title || "Untitled";
  if ($("session-title").textContent !== title) {
    $("session-title").textContent = title;
    document.title = `${title} · Chat sessions`;
  }
  composer.showDefaultPolicy(session.policy);
  const owner = session.owner === me;
  $("settings-form").hidden = !owner;
  $("invite-form").hidden = !owner;
  $("leave").hidden = owner;
  $("delete-session").hidden = !owner;
  $("settings-readonly").hidden = owner;
  const readonly =
    `Model: ${session.model}. Default when answers are running: “${POLICY_LABELS[session.policy]}”. ` +
    `Only ${session.owner} (the owner) changes these.`;
  if ($("settings-readonly").textContent !== readonly) $("settings-readonly").textContent = readonly;
  const key = JSON.stringify([session.policy, session.model, session.modelOptions, models]);
  const form = $("settings-form");
  if (owner && key !== settingsKey && !form.contains(document.activeElement)) {
    settingsKey = key;
    $("default-policy").value = session.policy;
    const choices = [...new Set([...(models || []), session.model])];
    $("model").replaceChildren(...choices.map((name) => new Option(name, name, false, name === session.model)));
    $("model-options").value = Object.keys(session.modelOptions || {}).length ? JSON.stringify(session.modelOptions) : "";
    showOptionsHint();
  }
  const titleInput = $("title-input");
  if (document.activeElement !== titleInput) titleInput.value = session.title;
}

function showOptionsHint() {
  $("options-hint").textContent = $("model").value === "demo" ? OPTION_HINTS.demo : OPTION_HINTS.other;
}

$("model").addEventListener("change", showOptionsHint);

$("session-menu").addEventListener("toggle", async () => {
  if ($("session-menu").open && models === null && chat.session?.owner === me) {
    try {
      models = (await api("GET", "/api/models")).results;
      settingsKey = null;
      renderSession();
    } catch (error) {
      say(explain(error));
    }
  }
});

$("title-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("PATCH", sessionUrl, { title: $("title-input").value.trim() });
    say("Renamed.", "info");
  } catch (error) {
    say(`Not renamed: ${explain(error)}`);
  }
});

$("settings-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  let options = {};
  const raw = $("model-options").value.trim();
  if (raw) {
    try {
      options = JSON.parse(raw);
    } catch {
      options = null;
    }
    if (!options || typeof options !== "object" || Array.isArray(options)) {
      say('Not saved: the model options are not a JSON object, for example {"temperature": 0.3}.');
      return;
    }
  }
  try {
    await api("PATCH", sessionUrl, { policy: $("default-policy").value, model: $("model").value, modelOptions: options });
    settingsKey = null;
    say("Settings saved: new messages use them, on every device.", "info");
  } catch (error) {
    say(`Settings not saved: ${explain(error)}`);
  }
});

$("invite-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const username = $("invite-input").value.trim();
  if (!username) return;
  try {
    await api("POST", `${sessionUrl}/members`, { username });
    $("invite-input").value = "";
    say(`${username} is a member now and can open this session.`, "info");
  } catch (error) {
    say(error.code === "not_found" ? `No user named “${username}”.` : `Not invited: ${explain(error)}`);
  }
});

$("leave").addEventListener("click", async () => {
  if (!confirm("Leave this session? You will no longer see it.")) return;
  try {
    await api("DELETE", `${sessionUrl}/members`);
    location.assign("/");
  } catch (error) {
    say(explain(error));
  }
});

$("delete-session").addEventListener("click", async () => {
  if (!confirm("Delete this session and everything in it, for every member? This cannot be undone.")) return;
  try {
    await api("DELETE", sessionUrl);
    location.assign("/");
  } catch (error) {
    say(explain(error));
  }
});

// --- the log's position: newer versions, jump to latest -----------------------------------------

let unseen = 0; // messages that arrived while the reader was scrolled up
let lastCount = 0;

const OLDER_VERSION = "You are looking at an older version of this conversation; newer messages are not shown.";
const LIVE_ELSEWHERE = "An answer is being written in another version of this conversation, not shown here.";

function renderPosition() {
  const live = chat.tree.hiddenLive();
  $("newer").hidden = !live && !chat.tree.hidesNewer();
  const [notice, action] = live ? [LIVE_ELSEWHERE, "Show it"] : [OLDER_VERSION, "Show the latest"];
  if ($("newer-text").textContent !== notice) $("newer-text").textContent = notice;
  if ($("show-latest").textContent !== action) $("show-latest").textContent = action;
  const count = chat.tree.nodes.size + chat.outbox.size;
  if (messages.atEnd()) unseen = 0;
  else if (count > lastCount) unseen += count - lastCount;
  lastCount = count;
  const jump = $("jump");
  jump.hidden = messages.atEnd();
  const text = unseen ? `↓ ${unseen} new ${unseen === 1 ? "message" : "messages"}` : "↓ Jump to latest";
  if (jump.textContent !== text) jump.textContent = text;
}

$("show-latest").addEventListener("click", () => {
  const live = chat.tree.hiddenLive();
  if (live) chat.tree.follow(live.id); // the versions that lead to it
  else chat.tree.showLatest();
  render();
  if (live) messages.reveal(live.id);
  else messages.scrollToEnd();
});
$("jump").addEventListener("click", () => {
  messages.scrollToEnd();
  renderPosition();
  $("message-input").focus();
});
$("messages").addEventListener("scroll", () => renderPosition(), { passive: true });

// --- rendering --------------------------------------------------------------------------------

let scheduled = false;
function render() {
  scheduled = false;
  messages.render();
  renderPeople();
  renderActivity();
  renderSession();
  renderPosition();
  composer.refresh();
}

function schedule() {
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(render);
  }
}

// --- wiring ---------------------------------------------------------------------------------

chat.addEventListener("change", schedule);
chat.addEventListener("status", () => {
  renderConnection();
  schedule();
});
chat.addEventListener("servererror", (event) => say(explain(event.detail)));
chat.addEventListener("event", (event) => {
  const { type, clientId } = event.detail;
  if (type === "member.left" && clientId === me) {
    leftElsewhere = true;
    say("You left this session on another device.", "info");
  }
  if (type === "session.deleted") renderConnection();
});
chat.addEventListener("snapshot", () => {
  if (chat.stats.snapshots > 1) loadSession(); // a resync: the settings may have moved too
});

document.addEventListener("keydown", (event) => {
  // Esc anywhere stops this user's answers (the edit box handles its own Esc first).
  if (event.key === "Escape" && !event.defaultPrevented && chat.inFlight({ own: true }).length) {
    event.preventDefault();
    cancel({ own: true });
  }
});

function loadSession() {
  return api("GET", sessionUrl)
    .then((session) => chat.applySession(session))
    .catch((error) => say(explain(error)));
}

loadSession();
renderConnection();
chat.connect().catch(() => renderConnection());
