// The HTTP side of the protocol for pages of this site (same origin, Django session cookie).
// Unsafe methods carry the CSRF token: from the page's <meta name="csrf-token"> (rendered
// by Django), else from the `csrftoken` cookie.

import { ChatError } from "./transport.js";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta?.content) return meta.content;
  const cookie = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
  return cookie ? decodeURIComponent(cookie.slice("csrftoken=".length)) : "";
}

/** fetch a JSON endpoint; resolves with the body, rejects with ChatError(code). */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  let response;
  try {
    response = await fetch(path, {
      method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ChatError("network", "the server cannot be reached");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    throw new ChatError(error.code || String(response.status), error.message || data.detail || response.statusText);
  }
  return data;
}
