// A small, safe Markdown renderer for model answers.
//
// Safety comes from never parsing HTML at all: the output is built with createElement and
// text nodes only, so any `<script>`, `<img onerror>` or entity in the input is shown as
// the characters it is. No innerHTML anywhere. Links are made only for http(s) URLs and
// open with rel="noopener noreferrer nofollow". The subset: paragraphs, line breaks,
// headings (#, ##, ###), fenced and indented code blocks, block quotes, bullet and numbered
// lists, `code`, **strong**, *emphasis* / _emphasis_, [text](http://...) and bare http(s)
// URLs. Anything else stays plain text.

const SAFE_URL = /^https?:\/\/[^\s<>"'`]+$/i;

/** Render `source` into a DocumentFragment. */
export function renderMarkdown(source, doc = document) {
  const fragment = doc.createDocumentFragment();
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)\s*$/);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of a still-streaming block)
      fragment.append(codeBlock(doc, body.join("\n"), fence[2]));
      continue;
    }
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const heading = line.match(/^(#{1,3})\s+(.*)$/);
    if (heading) {
      // Headings inside a chat message stay small: #, ##, ### become h3, h4, h5.
      const h = doc.createElement(`h${heading[1].length + 2}`);
      appendInline(doc, h, heading[2]);
      fragment.append(h);
      i += 1;
      continue;
    }
    if (/^\s*([-*+]|\d{1,9}[.)])\s+/.test(line)) {
      i = list(doc, lines, i, fragment);
      continue;
    }
    if (/^ {4}|^\t/.test(line)) {
      const body = [];
      while (i < lines.length && (/^ {4}|^\t/.test(lines[i]) || !lines[i].trim())) body.push(lines[i++].replace(/^ {4}|^\t/, ""));
      fragment.append(codeBlock(doc, body.join("\n").replace(/\n+$/, ""), ""));
      continue;
    }
    if (/^>\s?/.test(line)) {
      const body = [];
      while (i < lines.length && /^>\s?/.test(lines[i])) body.push(lines[i++].replace(/^>\s?/, ""));
      const quote = doc.createElement("blockquote");
      quote.append(renderMarkdown(body.join("\n"), doc));
      fragment.append(quote);
      continue;
    }
    // The first line always belongs to the paragraph (it may look like a block start that
    // did not parse, such as a malformed fence): the loop must always move forward.
    const paragraph = [lines[i++]];
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) paragraph.push(lines[i++]);
    const p = doc.createElement("p");
    paragraph.forEach((text, index) => {
      if (index) p.append(doc.createElement("br"));
      appendInline(doc, p, text);
    });
    fragment.append(p);
  }
  return fragment;
}

function startsBlock(line) {
  return /^\s*(```|~~~)|^#{1,3}\s|^\s*([-*+]|\d{1,9}[.)])\s+|^>/.test(line);
}

function codeBlock(doc, text, language) {
  const pre = doc.createElement("pre");
  const code = doc.createElement("code");
  // The language is a class hint only; it is matched to [\w+-]* above, so it is inert.
  if (language) code.className = `language-${language}`;
  code.textContent = text;
  pre.append(code);
  return pre;
}

function list(doc, lines, start, fragment) {
  const ordered = /^\s*\d/.test(lines[start]);
  const element = doc.createElement(ordered ? "ol" : "ul");
  let i = start;
  let item = null;
  while (i < lines.length) {
    const line = lines[i];
    const bullet = line.match(/^\s*([-*+]|(\d{1,9})[.)])\s+(.*)$/);
    if (bullet && Boolean(bullet[2]) === ordered) {
      item = doc.createElement("li");
      if (ordered && !element.children.length && bullet[2] !== "1") element.setAttribute("start", String(Number(bullet[2])));
      appendInline(doc, item, bullet[3]);
      element.append(item);
    } else if (item && line.trim() && /^\s+/.test(line)) {
      item.append(doc.createElement("br")); // a continuation line of the item
      appendInline(doc, item, line.trim());
    } else {
      break;
    }
    i += 1;
  }
  fragment.append(element);
  return i;
}

// Inline spans, first match wins: code, link, bare URL, strong, emphasis. Underscores
// never open or close emphasis inside a word (snake_case, window.__x stay as they are). A
// URL may hold balanced parentheses (https://en.wikipedia.org/wiki/Bee_(disambiguation)),
// while a parenthesis that closes around a URL stays outside it.
const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\[([^\]\n]+)\]\(((?:[^()\s]|\([^()\s]*\))+)\)|(https?:\/\/(?:[^\s<>()"'`]|\([^\s<>()"'`]*\))*(?:[^\s<>()"'`.,;:!?]|\([^\s<>()"'`]*\)))|\*\*(?=\S)([\s\S]*?\S)\*\*|(?<!\w)__(?=\S)([\s\S]*?\S)__(?!\w)|\*(?=[^\s*])([\s\S]*?[^\s*])\*|(?<!\w)_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/;

/** Append the inline Markdown of `text` to `parent`, as elements and text nodes. */
export function appendInline(doc, parent, text) {
  let rest = text;
  while (rest) {
    const match = INLINE.exec(rest);
    if (!match) {
      parent.append(doc.createTextNode(rest));
      return;
    }
    if (match.index) parent.append(doc.createTextNode(rest.slice(0, match.index)));
    const [whole, , code, label, href, bare, strong, strong2, em, em2] = match;
    if (code !== undefined) {
      const element = doc.createElement("code");
      element.textContent = code.trim() ? code.replace(/^ (.*) $/, "$1") : code;
      parent.append(element);
    } else if (label !== undefined) {
      if (SAFE_URL.test(href)) {
        const a = link(doc, href);
        appendInline(doc, a, label);
        parent.append(a);
      } else {
        parent.append(doc.createTextNode(whole)); // javascript:, data:, relative: left as text
      }
    } else if (bare !== undefined) {
      const a = link(doc, bare);
      a.textContent = bare;
      parent.append(a);
    } else if (strong !== undefined || strong2 !== undefined) {
      const element = doc.createElement("strong");
      appendInline(doc, element, strong ?? strong2);
      parent.append(element);
    } else {
      const element = doc.createElement("em");
      appendInline(doc, element, em ?? em2);
      parent.append(element);
    }
    rest = rest.slice(match.index + whole.length);
  }
}

function link(doc, href) {
  const a = doc.createElement("a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}
