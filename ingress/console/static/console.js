// ai-gateway console: the theme switch, copy buttons, confirmations and the streamed
// playground. Loaded from this origin only (the CSP forbids inline script).
(() => {
  "use strict";
  const root = document.documentElement;
  const saved = localStorage.getItem("aigw-theme");
  if (saved === "light" || saved === "dark") root.dataset.theme = saved;

  function isDark() {
    if (root.dataset.theme) return root.dataset.theme === "dark";
    return window.matchMedia("(prefers-color-scheme: dark)").matches;
  }

  async function playground(form) {
    const answer = document.getElementById("pg-answer");
    const usage = document.getElementById("pg-usage");
    const error = document.getElementById("pg-error");
    const button = form.querySelector("button[type=submit]");
    answer.textContent = "";
    usage.textContent = "";
    error.hidden = true;
    button.disabled = true;
    const messages = [];
    const system = form.elements.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push({ role: "user", content: form.elements.message.value });
    try {
      const response = await fetch(form.dataset.endpoint, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": form.dataset.csrf },
        body: JSON.stringify({ model: form.elements.model.value, messages, stream: true,
                               stream_options: { include_usage: true } }),
      });
      if (!response.ok) {
        let message = `HTTP ${response.status}`;
        try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
        throw new Error(message);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const payload = line.slice(6);
            if (payload === "[DONE]") continue;
            const chunk = JSON.parse(payload);
            if (chunk.error) throw new Error(chunk.error.message);
            for (const choice of chunk.choices || []) {
              if (choice.delta && choice.delta.content) answer.textContent += choice.delta.content;
            }
            if (chunk.usage) {
              const u = chunk.usage;
              const cost = u.cost !== undefined ? ` · cost $${u.cost}` : "";
              usage.textContent = `${u.prompt_tokens} tokens in · ${u.completion_tokens} out${cost}`;
            }
          }
        }
      }
    } catch (exc) {
      error.textContent = `The call failed: ${exc.message}`;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const toggle of document.querySelectorAll("[data-theme-toggle]")) {
      toggle.addEventListener("click", () => {
        root.dataset.theme = isDark() ? "light" : "dark";
        localStorage.setItem("aigw-theme", root.dataset.theme);
      });
    }
    for (const button of document.querySelectorAll("[data-copy]")) {
      button.addEventListener("click", async () => {
        const field = document.getElementById(button.dataset.copy);
        field.select();
        try { await navigator.clipboard.writeText(field.value); } catch (_) { document.execCommand("copy"); }
        const note = document.querySelector(`[data-copied-for="${button.dataset.copy}"]`);
        if (note) note.hidden = false;
      });
    }
    for (const form of document.querySelectorAll("form[data-confirm]")) {
      form.addEventListener("submit", (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    }
    const pg = document.getElementById("playground");
    if (pg) pg.addEventListener("submit", (event) => { event.preventDefault(); playground(pg); });
  });
})();
