// The chat page: connects the transport to the message log, the composer, the people list
// and the status line. State lives in the transport; this module only decides what to show
// and turns clicks into protocol commands.

import { api } from "./api.js";
import { Composer } from "./composer.js";
import { MessagesView } from "./messages-view.js";
import { ChatTransport } from "./transport.js";

const root = document.getElementById("chat");
const sessionId = root.dataset.sessionId;
const me = root.dataset.username;

const chat = new ChatTransport({ sessionId });
window.chat = chat; // for the console and the browser tests

const $ = (id) => document.getElementById(id);
const notice = $("notice");
let members = [];
const follow = new Set(); // ids of messages this device sent: show their branch when they arrive

const ERRORS = {
  busy: "The assistant is answering and this session refuses new messages until it finishes. Your message was not sent.",
  queue_full: "The queue is full. Your message was not sent; try again when a queued message has been answered.",
  rate_limited: "You are sending too fast. Your message was not sent; wait a moment and try again.",
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

function explain(error) {
  return ERRORS[error.code] || `${error.detail || error.message} (${error.code || "error"})`;
}

// --- commands -------------------------------------------------------------------------------

async function send(text, policy, extra = {}) {
  say("");
  // When nothing is in flight, attach to the end of the branch on screen; otherwise the
  // server places the message by the policy (sibling, after the queue, after the interrupted answer).
  const options = { policy, ...extra };
  if (!extra.forkOf && !extra.regenerate && chat.inFlight().length === 0) {
    const leaf = chat.tree.leaf();
    if (leaf) options.parent = leaf.id;
  }
  try {
    const turn = await chat.send(text, options);
    for (const id of [...turn.messageIds, turn.ack.assistantMessageId]) if (id) follow.add(id);
    followArrived();
    return true;
  } catch (error) {
    say(explain(error));
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

function followArrived() {
  for (const id of follow) {
    if (chat.tree.get(id)) {
      chat.tree.follow(id);
      follow.delete(id);
    }
  }
}

// --- views ----------------------------------------------------------------------------------

const messages = new MessagesView($("messages"), chat, me, {
  stop: (turnId) => cancel({ turnId }),
  regenerate: (id) => send(null, composer.policy.value, { regenerate: id }),
  edit: (id, text) => send(text, composer.policy.value, { forkOf: id }).then(() => composer.input.focus()),
  showSibling: (id) => {
    chat.tree.select(id);
    render(); // now, so that focus can move to the new sibling's control
  },
});

const composer = new Composer($("composer"), {
  hasOwnTurns: () => chat.inFlight({ own: true }).length > 0,
  send: (text, policy) => send(text, policy),
  stop: () => cancel({ own: true }),
  setPolicy: async (policy) => {
    try {
      await api("PATCH", `/api/sessions/${encodeURIComponent(sessionId)}`, { policy });
      say("");
    } catch (error) {
      say(`The choice was not saved: ${explain(error)}`);
    }
  },
});

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

function renderConnection() {
  const box = $("connection");
  box.dataset.state = chat.state;
  box.querySelector(".label").textContent = CONNECTION[chat.state] || chat.state;
  if (chat.state === "closed" && CLOSE_REASONS[chat.closeCode]) say(CLOSE_REASONS[chat.closeCode]);
}

function renderPeople() {
  const online = new Set(chat.online);
  const names = [...new Set([...members, ...online])].sort();
  $("members").replaceChildren(
    ...names.map((name) => {
      const li = document.createElement("li");
      li.dataset.user = name;
      li.dataset.online = String(online.has(name));
      li.textContent = name === me ? `${name} (you)` : name;
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
  const text = parts.join(" · ");
  const line = $("activity");
  if (line.textContent !== text) line.textContent = text;
}

let scheduled = false;
function render() {
  scheduled = false;
  followArrived();
  messages.render();
  renderPeople();
  renderActivity();
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

document.addEventListener("keydown", (event) => {
  // Esc anywhere stops this user's answers (the edit box handles its own Esc first).
  if (event.key === "Escape" && !event.defaultPrevented && chat.inFlight({ own: true }).length) {
    event.preventDefault();
    cancel({ own: true });
  }
});

api("GET", `/api/sessions/${encodeURIComponent(sessionId)}`)
  .then((session) => {
    members = session.members || [];
    composer.showSavedPolicy(session.policy || "concurrent");
    schedule();
  })
  .catch((error) => say(explain(error)));

renderConnection();
chat.connect().catch(() => renderConnection());
