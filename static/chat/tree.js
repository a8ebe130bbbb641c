// The conversation tree as one device sees it, read as one shared timeline
// (docs/protocol.md, "The conversation tree"; docs/decisions/021-shared-timeline.md).
//
// Siblings come in two kinds. Versions of one exchange: an edit (`forkOf` on the user
// message) or a regeneration (`forkOf` on the answer), followed back to the original; one
// version is shown at a time, behind a ‹ n/m › pager. Concurrent exchanges: siblings without
// `forkOf`, sent while other messages were being answered; all of them are shown.
//
// The timeline: from the root, at every fork every concurrent exchange with its shown
// version, ordered by when each exchange was sent (its first message's createdAt, then
// arrival order), an answer after its question, an edit or a regeneration where its original
// was. The shown version is the reader's pick, else the one holding the newest message: so
// every device that picked nothing shows the same conversation, ending with the newest
// activity. Picks are local to the device (a view, not session state).

const ROOT = "";
const NO_TIME = Number.MAX_SAFE_INTEGER; // a node known only from a delta: newest

export class ConversationTree {
  constructor() {
    this.nodes = new Map();
    this.children = new Map(); // parent id ("" for roots) -> [child id] in arrival order
    this.arrival = new Map(); // id -> the order in which this device learnt of it
    this.picked = new Map(); // slot (the original's id) -> the version the reader chose
    this._arrivals = 0;
    this._version = 0; // bumped by any change of shape or pick: the timeline is cached on it
    this._cache = null;
  }

  clear() {
    this.nodes.clear();
    this.children.clear();
    this.arrival.clear();
    this.picked.clear();
    this._touch();
  }

  get(id) {
    return this.nodes.get(id);
  }

  /** Insert or replace a node (a node first known from a delta moves under its parent). */
  upsert(node) {
    const known = this.nodes.get(node.id);
    this.nodes.set(node.id, node);
    if (!known) {
      this.arrival.set(node.id, this._arrivals++);
      this._attach(node);
    } else if ((known.parent || ROOT) !== (node.parent || ROOT)) {
      const before = this.children.get(known.parent || ROOT) || [];
      before.splice(before.indexOf(node.id), 1);
      this._attach(node);
    }
    this._touch();
    return node;
  }

  _attach(node) {
    const key = node.parent || ROOT;
    if (!this.children.has(key)) this.children.set(key, []);
    this.children.get(key).push(node.id);
  }

  _touch() {
    this._version += 1;
    this._cache = null;
  }

  childrenOf(parentId) {
    return (this.children.get(parentId || ROOT) || []).map((id) => this.nodes.get(id));
  }

  // --- order -----------------------------------------------------------------------------

  /** Compare two nodes by when they were made: createdAt, then arrival. */
  compare(a, b) {
    const ta = a.createdAt ?? NO_TIME;
    const tb = b.createdAt ?? NO_TIME;
    return ta - tb || this.arrival.get(a.id) - this.arrival.get(b.id);
  }

  /** The id of the original a node is a version of (itself when it is no edit or regeneration). */
  slotOf(id) {
    let node = this.nodes.get(id);
    if (!node) return id;
    const parent = node.parent || ROOT;
    const seen = new Set([id]);
    while (node.forkOf && !seen.has(node.forkOf)) {
      const original = this.nodes.get(node.forkOf);
      if (!original || (original.parent || ROOT) !== parent) break;
      seen.add(original.id);
      node = original;
    }
    return node.id;
  }

  /** The versions of the exchange a node belongs to, oldest first. */
  versionsOf(id) {
    const node = this.nodes.get(id);
    if (!node) return [];
    const slot = this.slotOf(id);
    return this.childrenOf(node.parent)
      .filter((other) => this.slotOf(other.id) === slot)
      .sort((a, b) => this.compare(a, b));
  }

  /** {index (1-based), count, prev, next} of a node among the versions of its exchange. */
  siblings(id) {
    const versions = this.versionsOf(id).map((n) => n.id);
    const at = versions.indexOf(id);
    if (at < 0) return { index: 0, count: 0, prev: null, next: null };
    return {
      index: at + 1,
      count: versions.length,
      prev: at > 0 ? versions[at - 1] : null,
      next: at < versions.length - 1 ? versions[at + 1] : null,
    };
  }

  // --- the timeline ------------------------------------------------------------------------

  _compute() {
    if (this._cache) return this._cache;
    // The newest node at or below each node (iteratively: a long conversation is deep).
    const newest = new Map();
    const order = [];
    const stack = [...(this.children.get(ROOT) || [])];
    while (stack.length) {
      const id = stack.pop();
      order.push(id);
      stack.push(...(this.children.get(id) || []));
    }
    for (let i = order.length - 1; i >= 0; i -= 1) {
      const id = order[i];
      let best = this.nodes.get(id);
      for (const child of this.children.get(id) || []) {
        const candidate = newest.get(child);
        if (candidate && this.compare(candidate, best) > 0) best = candidate;
      }
      newest.set(id, best);
    }
    // Walk the shown versions of every exchange, then order them as the timeline shows them.
    const shown = [];
    const depth = new Map();
    const walk = [ROOT];
    while (walk.length) {
      const parent = walk.pop();
      for (const versions of this._slots(parent).values()) {
        const pick = this.picked.get(this.slotOf(versions[0].id));
        const version =
          versions.find((v) => v.id === pick) ||
          versions.reduce((a, b) => (this.compare(newest.get(b.id), newest.get(a.id)) > 0 ? b : a));
        depth.set(version.id, (depth.get(parent) ?? -1) + 1);
        shown.push(version);
        walk.push(version.id);
      }
    }
    const keys = new Map(shown.map((node) => [node.id, this._exchangeStart(node)]));
    shown.sort(
      (a, b) =>
        this.compare(keys.get(a.id), keys.get(b.id)) || depth.get(a.id) - depth.get(b.id) || this.compare(a, b),
    );
    let latest = null;
    for (const node of this.nodes.values()) if (!latest || this.compare(node, latest) > 0) latest = node;
    this._cache = { timeline: shown, ids: new Set(shown.map((n) => n.id)), latest };
    return this._cache;
  }

  /** The children of a node grouped by the exchange they are versions of, in send order. */
  _slots(parentId) {
    const slots = new Map();
    const children = this.childrenOf(parentId).sort((a, b) => this.compare(a, b));
    for (const child of children) {
      const slot = this.slotOf(child.id);
      if (!slots.has(slot)) slots.set(slot, []);
      slots.get(slot).push(child);
    }
    return slots;
  }

  /** The node whose sending places `node`'s exchange in time: the original of its send's
   * first message (an answer goes with its question, the rest of a send with its first). */
  _exchangeStart(node) {
    let current = node;
    for (;;) {
      const parent = current.parent ? this.nodes.get(current.parent) : undefined;
      const sameSend = parent && parent.role === "user" && current.turnId && parent.turnId === current.turnId;
      if (parent && (current.role === "assistant" || sameSend)) current = parent;
      else return this.nodes.get(this.slotOf(current.id)) || current;
    }
  }

  /** The timeline, in the order it is shown. */
  timeline() {
    return this._compute().timeline;
  }

  /** The timeline (the name of the single branch this tree used to show). */
  branch() {
    return this.timeline();
  }

  /** Is the node shown in the timeline? */
  shows(id) {
    return this._compute().ids.has(id);
  }

  /** The newest node of the whole tree. */
  newest() {
    return this._compute().latest;
  }

  /** True when the reader's picks hide the newest message (offer to show it). */
  hidesNewer() {
    const latest = this.newest();
    return Boolean(latest && !this.shows(latest.id));
  }

  /** The newest answer still coming (streaming or queued) that the timeline does not show, or
   * null. Versions are shown one at a time: when someone edits or regenerates a message above
   * an exchange still being answered (another person's follow-up, say), the newer version is
   * shown and that exchange goes out of view on every device that picked nothing; the page
   * offers to show it rather than let a live answer stream where no one can see it. */
  hiddenLive() {
    let found = null;
    for (const node of this.nodes.values()) {
      const live = node.role === "assistant" && (node.status === "streaming" || node.status === "queued");
      if (live && !this.shows(node.id) && (!found || this.compare(node, found) > 0)) found = node;
    }
    return found;
  }

  /** Show `id` among the versions of its exchange (the pager). */
  select(id) {
    if (!this.nodes.has(id)) return;
    this.picked.set(this.slotOf(id), id);
    this._touch();
  }

  /** Drop every pick: show the timeline every other device shows, with the newest activity. */
  showLatest() {
    if (!this.picked.size) return;
    this.picked.clear();
    this._touch();
  }

  /** Show the versions that lead to `id`: pick it and every ancestor among their versions. */
  follow(id) {
    const seen = new Set();
    let node = this.nodes.get(id);
    while (node && !seen.has(node.id)) {
      seen.add(node.id);
      this.picked.set(this.slotOf(node.id), node.id);
      node = node.parent ? this.nodes.get(node.parent) : undefined;
    }
    this._touch();
  }

  /** The last node of the timeline: where a new message attaches when nothing is in flight. */
  leaf() {
    const shown = this.timeline();
    return shown[shown.length - 1];
  }
}

/** Plain text of a node (its text parts; reasoning parts excluded). */
export function textOf(node) {
  if (!node) return "";
  return (node.parts || [])
    .filter((part) => part.type === "text")
    .map((part) => part.text || "")
    .join("");
}
