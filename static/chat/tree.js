// The conversation tree as one device sees it, and which sibling it shows at each fork.
//
// Nodes arrive in creation order (snapshot order, then live `message` events), so the
// children of a node are kept in arrival order and "the newest child" is the last one.
// A fork is followed at its newest child unless the reader picked another sibling there;
// that pick is local to this device (it is a view, not session state).

const ROOT = "";

export class ConversationTree {
  constructor() {
    this.nodes = new Map();
    this.children = new Map(); // parent id ("" for roots) -> [child id] in arrival order
    this.picked = new Map(); // parent id -> child id chosen by the reader
  }

  clear() {
    this.nodes.clear();
    this.children.clear();
    this.picked.clear();
  }

  get(id) {
    return this.nodes.get(id);
  }

  /** Insert or replace a node; its place in the tree never changes once known. */
  upsert(node) {
    const known = this.nodes.get(node.id);
    this.nodes.set(node.id, node);
    if (!known) {
      const key = node.parent || ROOT;
      if (!this.children.has(key)) this.children.set(key, []);
      this.children.get(key).push(node.id);
    }
    return node;
  }

  childrenOf(parentId) {
    return (this.children.get(parentId || ROOT) || []).map((id) => this.nodes.get(id));
  }

  /** The node shown below `parentId`: the reader's pick, else the newest child. */
  shownChild(parentId) {
    const ids = this.children.get(parentId || ROOT) || [];
    const pick = this.picked.get(parentId || ROOT);
    const id = pick && ids.includes(pick) ? pick : ids[ids.length - 1];
    return id ? this.nodes.get(id) : undefined;
  }

  /** The selected branch, root first. */
  branch() {
    const path = [];
    const seen = new Set();
    let node = this.shownChild(ROOT);
    while (node && !seen.has(node.id)) {
      seen.add(node.id);
      path.push(node);
      node = this.shownChild(node.id);
    }
    return path;
  }

  /** {index (1-based), count, prev, next} of a node among its siblings. */
  siblings(id) {
    const node = this.nodes.get(id);
    if (!node) return { index: 0, count: 0, prev: null, next: null };
    const ids = this.children.get(node.parent || ROOT) || [];
    const at = ids.indexOf(id);
    return {
      index: at + 1,
      count: ids.length,
      prev: at > 0 ? ids[at - 1] : null,
      next: at < ids.length - 1 ? ids[at + 1] : null,
    };
  }

  /** Show `id` at its fork (sibling navigation). */
  select(id) {
    const node = this.nodes.get(id);
    if (node) this.picked.set(node.parent || ROOT, id);
  }

  /** Show the branch that leads to `id`: pick it and every ancestor at their forks. */
  follow(id) {
    const seen = new Set();
    let node = this.nodes.get(id);
    while (node && !seen.has(node.id)) {
      seen.add(node.id);
      this.picked.set(node.parent || ROOT, node.id);
      node = node.parent ? this.nodes.get(node.parent) : undefined;
    }
  }

  /** Last node of the selected branch (where a new message would attach when idle). */
  leaf() {
    const path = this.branch();
    return path[path.length - 1];
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
