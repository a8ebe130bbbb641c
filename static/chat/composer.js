// The message composer: one button that is Send or Stop, the choice of what this message
// does if answers are running, and the keyboard (Enter sends, Shift+Enter is a new line, Esc
// stops this user's answers).
//
// The button is Stop when this user has answers queued or running and the box is empty, and
// it says what it stops: "Stop my answer", "Stop my 2 answers" (other people's answers have
// their own Stop, on the answer). Typing turns it back into Send, because sending while the
// assistant answers is a normal thing to do here.
//
// The choice beside it is for this device's next messages; it starts as the session's
// default and follows it until the person picks another. The default itself is changed only
// by the session's owner, in the session settings: a pick here never changes it.

export const POLICY_LABELS = {
  concurrent: "Send alongside",
  queue: "Queue after the running answers",
  interrupt: "Interrupt my answer (others' keep running)",
  reject: "Don't send while answers run",
};

export class Composer {
  /**
   * @param {HTMLFormElement} form holding #message-input, #policy, #policy-note, #send-stop
   * @param {object} hooks {ownTurns(): number, send(text, policy): Promise<boolean>, stop(): Promise}
   */
  constructor(form, hooks) {
    this.form = form;
    this.hooks = hooks;
    this.input = form.querySelector("#message-input");
    this.policy = form.querySelector("#policy");
    this.note = form.querySelector("#policy-note");
    this.button = form.querySelector("#send-stop");
    this.mode = null; // set by refresh()
    this.label = null;
    this.defaultPolicy = this.policy.value;
    this.policyChosen = false; // the person picked a policy on this page
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
    this.policy.addEventListener("change", () => {
      this.policyChosen = this.policy.value !== this.defaultPolicy;
      this._showNote();
    });
    this.note.addEventListener("click", (event) => {
      if (event.target.closest("button")) {
        this.policy.value = this.defaultPolicy;
        this.policyChosen = false;
        this._showNote();
        this.policy.focus();
      }
    });
    this.refresh();
  }

  /** The session's default policy (from the load, then `session.updated`): shown unless the
   * person picked another one on this page (a load answering after their pick keeps it). */
  showDefaultPolicy(policy) {
    if (!this.policy.querySelector(`option[value="${CSS.escape(policy)}"]`)) return;
    this.defaultPolicy = policy;
    if (!this.policyChosen) this.policy.value = policy;
    this.policyChosen = this.policy.value !== policy;
    this._showNote();
  }

  _showNote() {
    const differs = this.policy.value !== this.defaultPolicy;
    const key = `${this.policy.value}|${this.defaultPolicy}`;
    if (key === this.noteKey) return; // called on every render: leave the button in place
    this.noteKey = key;
    this.note.hidden = !differs;
    if (differs) {
      const text = `Only for your messages here; the session's default is “${POLICY_LABELS[this.defaultPolicy]}”. `;
      const reset = document.createElement("button");
      reset.type = "button";
      reset.className = "link-button";
      reset.textContent = "Use the default";
      this.note.replaceChildren(text, reset);
    }
  }

  /** Recompute Send/Stop from this user's answers in flight and the text. */
  refresh() {
    const hasText = Boolean(this.input.value.trim());
    const own = this.hooks.ownTurns();
    const mode = !hasText && own ? "stop" : "send";
    const label = mode === "stop" ? (own === 1 ? "Stop my answer" : `Stop my ${own} answers`) : "Send";
    if (mode !== this.mode || label !== this.label) {
      this.mode = mode;
      this.label = label;
      this.button.textContent = label;
      this.button.classList.toggle("stop", mode === "stop");
      this.button.setAttribute("aria-label", mode === "stop" ? label : "Send message");
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
    this.input.value = ""; // cleared at once (the message shows as sending); put back if refused
    this.refresh();
    const sent = await this.hooks.send(text, this.policy.value);
    if (!sent && !this.input.value) {
      this.input.value = text;
      this.refresh();
    }
    this.input.focus();
  }
}
