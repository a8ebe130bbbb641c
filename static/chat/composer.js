// The message composer: one button that is Send or Stop, the double-texting choice, and the
// keyboard (Enter sends, Shift+Enter is a new line, Esc stops this user's answers).
//
// The button is Stop when this user has answers queued or running and the box is empty:
// typing turns it back into Send, because sending while the assistant answers is a normal
// thing to do here (what happens then is the policy choice next to it).

export const POLICY_LABELS = {
  concurrent: "Run alongside",
  queue: "Queue after the current answer",
  interrupt: "Interrupt and replace",
  reject: "Refuse while busy",
};

export class Composer {
  /**
   * @param {HTMLFormElement} form holding #message-input, #policy, #send-stop
   * @param {object} hooks {hasOwnTurns(): bool, send(text, policy): Promise, stop(): Promise, setPolicy(p)}
   */
  constructor(form, hooks) {
    this.form = form;
    this.hooks = hooks;
    this.input = form.querySelector("#message-input");
    this.policy = form.querySelector("#policy");
    this.button = form.querySelector("#send-stop");
    this.mode = null; // set by refresh()
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("input", () => this.refresh());
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.policyChosen = false; // the person picked a policy on this page
    this.policy.addEventListener("change", () => {
      this.policyChosen = true;
      hooks.setPolicy(this.policy.value);
    });
    this.refresh();
  }

  /** Show the session's saved policy, unless the person already picked one on this page
   * (the page's first load can answer after their pick, with the value from before it). */
  showSavedPolicy(policy) {
    if (this.policyChosen) return;
    if (!this.policy.querySelector(`option[value="${CSS.escape(policy)}"]`)) return;
    this.policy.value = policy;
  }

  /** Recompute Send/Stop from the active turns and the text. */
  refresh() {
    const hasText = Boolean(this.input.value.trim());
    const mode = !hasText && this.hooks.hasOwnTurns() ? "stop" : "send";
    if (mode !== this.mode) {
      this.mode = mode;
      this.button.textContent = mode === "stop" ? "Stop" : "Send";
      this.button.classList.toggle("stop", mode === "stop");
      this.button.setAttribute("aria-label", mode === "stop" ? "Stop my answers" : "Send message");
    }
    this.button.disabled = mode === "send" && !hasText;
  }

  async submit() {
    if (this.mode === "stop") {
      await this.hooks.stop();
      return;
    }
    const text = this.input.value.trim();
    if (!text) return;
    this.input.value = ""; // cleared at once; put back if the send is refused
    this.refresh();
    const sent = await this.hooks.send(text, this.policy.value);
    if (!sent && !this.input.value) {
      this.input.value = text;
      this.refresh();
    }
    this.input.focus();
  }
}
