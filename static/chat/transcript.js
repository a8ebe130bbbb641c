// The transcript page: each answer's Markdown rendered as the chat page renders it. The page
// shows the text as written without this script (sessions_app/templates/sessions_app/transcript.html).
import { renderMarkdown } from "./markdown.js";

for (const body of document.querySelectorAll(".msg-assistant .body[data-markdown]")) {
  body.replaceChildren(renderMarkdown(body.dataset.markdown));
}
