// The chat page. Plain script, no build step. Two rules hold throughout:
// - every address is relative ("models", never "/models"), so the page works wherever the
//   server is mounted (ROOT_PATH);
// - model output only ever reaches the page through textContent and createTextNode: it is
//   shown, never parsed as HTML.
(() => {
  "use strict";

  const STORAGE_PREFIX = "chatproxy.";
  const $ = (id) => document.getElementById(id);
  const ui = {
    provider: $("provider"),
    model: $("model"),
    newConversation: $("new-conversation"),
    keyToggle: $("key-toggle"),
    keyForm: $("key-form"),
    keyInput: $("api-key"),
    keyForget: $("key-forget"),
    keyRefused: $("key-refused"),
    log: $("log"),
    empty: $("empty"),
    error: $("error"),
    errorText: $("error-text"),
    errorClose: $("error-close"),
    composer: $("composer"),
    prompt: $("prompt"),
    send: $("send"),
    status: $("status"),
  };

  // ---- storage: private modes may refuse it; the page then works for this visit only ----
  const storage = {
    get(name) {
      try { return window.localStorage.getItem(STORAGE_PREFIX + name); } catch { return null; }
    },
    set(name, value) {
      try {
        if (value === null || value === undefined) window.localStorage.removeItem(STORAGE_PREFIX + name);
        else window.localStorage.setItem(STORAGE_PREFIX + name, value);
      } catch { /* the conversation simply is not kept */ }
    },
    getJSON(name) {
      try { return JSON.parse(storage.get(name) || "null"); } catch { return null; }
    },
  };

  const state = {
    // "unknown" until the server has said: POST history answers 201 (on) or 404 (off).
    history: "unknown",
    conversationId: null,
    // The turns so far, {role, content, model}: sent whole each turn when history is off.
    messages: [],
    models: new Map(), // provider -> [model names], in the order GET models lists them
    controller: null, // the AbortController of the reply being streamed
  };

  class PageError extends Error {
    constructor(message, { status = 0, type = "", param = null, requestId = null } = {}) {
      super(message);
      this.status = status;
      this.type = type;
      this.param = param;
      this.requestId = requestId;
    }
  }

  // ---- talking to the server ----
  function authHeaders(headers = {}) {
    const key = storage.get("apiKey");
    return key ? { ...headers, Authorization: "Bearer " + key } : headers;
  }

  async function request(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new PageError("Cannot reach the server (" + (err && err.message ? err.message : "network error") + ").",
        { type: "network_error" });
    }
    if (response.status === 401) askForKey(Boolean(storage.get("apiKey")));
    return response;
  }

  // A JSON error body, native ({"error": "...", "type"}) or OpenAI's ({"error": {"message"}}).
  async function errorFrom(response) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON: the status says it */ }
    const inner = body && typeof body.error === "object" && body.error !== null ? body.error : body;
    const message = inner && typeof inner.error === "string" ? inner.error
      : inner && typeof inner.message === "string" ? inner.message
        : "The server answered " + response.status + " " + response.statusText + ".";
    return new PageError(message, {
      status: response.status,
      type: inner && inner.type ? String(inner.type) : "",
      param: inner && inner.param ? String(inner.param) : null,
      requestId: (body && body.request_id) || response.headers.get("X-Request-ID"),
    });
  }

  function describe(err) {
    const where = err.status ? " (HTTP " + err.status + ")" : "";
    const id = err.requestId ? " · request " + err.requestId : "";
    return err.message + where + id;
  }

  // Server-Sent Events from a fetch body: yields {event, data} per complete event.
  async function* serverEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = text;
          else if (field === "data") data.push(text);
        }
        if (data.length) yield { event, data: data.join("\n") };
      }
    }
  }

  // ---- Markdown-ish rendering, built node by node ----
  const FENCE = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
  const LIST_ITEM = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
  const QUOTE = /^\s*>\s?(.*)$/;
  // `code`, **bold**, __bold__, *italic*, _italic_: the first that matches at each point wins.
  // An italic never spans its own mark ([^*], [^_]): an opening that never closes then costs
  // a scan to the next mark, not to the end of the text (quadratic on `*a *a *a ...`).
  const INLINE = /(`+)([\s\S]+?)\1|\*\*([\s\S]+?)\*\*|__([\s\S]+?)__|\*(?=\S)([^*]*?\S)\*|\b_(?=\S)([^_]*?\S)_\b/g;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderInline(parent, text) {
    let last = 0;
    INLINE.lastIndex = 0;
    for (let match = INLINE.exec(text); match; match = INLINE.exec(text)) {
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      if (match[1] !== undefined) {
        parent.appendChild(el("code", "", match[2]));
      } else {
        const strong = match[3] !== undefined || match[4] !== undefined;
        const inner = strong ? (match[3] ?? match[4]) : (match[5] ?? match[6]);
        const node = el(strong ? "strong" : "em");
        // Nested marks (**bold `code`**): the inner text is rendered the same way.
        const saved = INLINE.lastIndex;
        renderInline(node, inner);
        INLINE.lastIndex = saved;
        parent.appendChild(node);
      }
      last = INLINE.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function startsBlock(line) {
    return FENCE.test(line) || LIST_ITEM.test(line) || HEADING.test(line) || QUOTE.test(line);
  }

  function renderMarkdown(container, text) {
    const blocks = document.createDocumentFragment();
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(FENCE);
      if (fence) {
        // A fence still open (a reply mid-stream) runs to the end of the text.
        const marker = fence[1];
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(marker)) body.push(lines[i++]);
        i += 1;
        const pre = el("pre");
        const code = el("code", "", body.join("\n"));
        if (fence[2]) code.dataset.lang = fence[2];
        pre.appendChild(code);
        blocks.appendChild(pre);
        continue;
      }
      if (!line.trim()) { i += 1; continue; }
      const heading = line.match(HEADING);
      if (heading) {
        const level = Math.min(5, heading[1].length + 2); // h3..h5 inside a message
        const node = el("h" + level);
        renderInline(node, heading[2]);
        blocks.appendChild(node);
        i += 1;
        continue;
      }
      if (LIST_ITEM.test(line)) {
        const ordered = /\d/.test(line.match(LIST_ITEM)[1]);
        const list = el(ordered ? "ol" : "ul");
        if (ordered) {
          const start = parseInt(line.match(LIST_ITEM)[1], 10);
          if (start !== 1) list.start = start;
        }
        while (i < lines.length) {
          const item = lines[i].match(LIST_ITEM);
          if (!item || /\d/.test(item[1]) !== ordered) break;
          const texts = [item[2]];
          i += 1;
          // Indented lines continue the item.
          while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !LIST_ITEM.test(lines[i])) {
            texts.push(lines[i].trim());
            i += 1;
          }
          const li = el("li");
          renderInline(li, texts.join("\n"));
          list.appendChild(li);
        }
        blocks.appendChild(list);
        continue;
      }
      if (QUOTE.test(line)) {
        const texts = [];
        while (i < lines.length && QUOTE.test(lines[i])) texts.push(lines[i++].match(QUOTE)[1]);
        const quote = el("blockquote");
        renderInline(quote, texts.join("\n"));
        blocks.appendChild(quote);
        continue;
      }
      const texts = [line];
      i += 1;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) texts.push(lines[i++]);
      const paragraph = el("p");
      renderInline(paragraph, texts.join("\n"));
      blocks.appendChild(paragraph);
    }
    container.replaceChildren(blocks);
  }

  // ---- the conversation on screen ----
  function nearBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  }

  function scrollToEnd() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function addMessage(role, content, model) {
    ui.empty.hidden = true;
    const item = el("article", "message " + role);
    item.setAttribute("aria-label", role === "user" ? "You" : role === "assistant" ? "Assistant" : "System");
    const bubble = el("div", "bubble");
    if (role === "user") {
      bubble.appendChild(el("p", "", content)); // what the user typed, exactly as typed
    } else {
      renderMarkdown(bubble, content);
    }
    item.appendChild(bubble);
    const meta = el("p", "meta", (role === "assistant" && model) || "");
    meta.hidden = !meta.textContent;
    item.appendChild(meta);
    ui.log.appendChild(item);
    return { item, bubble, meta };
  }

  function showTyping(bubble) {
    const dots = el("span", "typing");
    dots.setAttribute("aria-label", "The reply is on its way");
    dots.append(el("span"), el("span"), el("span"));
    bubble.replaceChildren(dots);
  }

  function clearLog() {
    for (const node of [...ui.log.children]) if (node !== ui.empty) node.remove();
    ui.empty.hidden = false;
  }

  function renderConversation() {
    clearLog();
    for (const message of state.messages) addMessage(message.role, message.content, message.model);
    scrollToEnd();
    updateStatus();
  }

  function updateStatus() {
    if (state.conversationId) {
      ui.status.textContent = "Conversation " + state.conversationId + " · kept on the server";
    } else if (state.messages.length) {
      ui.status.textContent = "Kept in this browser: the whole conversation is sent with each message";
    } else {
      ui.status.textContent = "";
    }
  }

  function showError(message) {
    ui.errorText.textContent = message;
    ui.error.hidden = false;
  }

  function hideError() {
    ui.error.hidden = true;
    ui.errorText.textContent = "";
  }

  function saveConversation() {
    storage.set("conversation", JSON.stringify({ id: state.conversationId, messages: state.messages }));
  }

  // ---- API key ----
  // A 401: the key form says what is needed, so no error banner repeats it.
  function askForKey(refused) {
    ui.keyToggle.hidden = false;
    ui.keyRefused.hidden = !refused;
    if (ui.keyForm.hidden) {
      ui.keyForm.hidden = false;
      ui.keyInput.value = storage.get("apiKey") || "";
      ui.keyInput.focus();
    }
  }

  async function useKey(event) {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) { ui.keyInput.focus(); return; }
    storage.set("apiKey", key);
    ui.keyForm.hidden = true;
    hideError();
    await start();
  }

  // ---- pickers ----
  function option(value, label) {
    const node = el("option", "", label);
    node.value = value;
    return node;
  }

  function fillModels() {
    const saved = storage.getJSON("choice") || {};
    const names = state.models.get(ui.provider.value) || [];
    ui.model.replaceChildren(option("", "Default"), ...names.map((name) => option(name, name)));
    if (saved.provider === ui.provider.value && names.includes(saved.model)) ui.model.value = saved.model;
    ui.model.disabled = false;
  }

  function rememberChoice() {
    storage.set("choice", JSON.stringify({ provider: ui.provider.value, model: ui.model.value }));
  }

  async function loadModels() {
    const response = await request("models");
    if (!response.ok) throw await errorFrom(response);
    const body = await response.json();
    state.models = new Map();
    for (const card of body.data || []) {
      if (!state.models.has(card.provider)) state.models.set(card.provider, []);
      state.models.get(card.provider).push(card.model);
    }
    const saved = storage.getJSON("choice") || {};
    ui.provider.replaceChildren(...[...state.models.keys()].map((name) => option(name, name)));
    if (state.models.has(saved.provider)) ui.provider.value = saved.provider;
    ui.provider.disabled = state.models.size === 0;
    if (state.models.size === 0) {
      ui.model.replaceChildren();
      throw new PageError("No provider is configured on this server: nothing can answer yet.");
    }
    fillModels();
  }

  // ---- the conversation's state ----
  async function restoreConversation() {
    const saved = storage.getJSON("conversation");
    state.conversationId = null;
    state.messages = [];
    if (saved && typeof saved.id === "string" && saved.id) {
      const showCopy = () => {
        // Kept for when the server is back: the browser's copy, with the error saying why.
        state.conversationId = saved.id;
        state.messages = Array.isArray(saved.messages) ? saved.messages : [];
        renderConversation();
      };
      let response;
      try {
        response = await request("history/" + saved.id.split("/").map(encodeURIComponent).join("/"));
      } catch (err) {
        showCopy();
        throw err;
      }
      if (response.ok) {
        const body = await response.json();
        state.history = "on";
        state.conversationId = saved.id;
        state.messages = (body.messages || []).map((m) => ({
          role: m.role,
          content: m.content,
          model: m.role === "assistant" ? m.model : undefined, // a user message names it too
        }));
        saveConversation();
      } else if (response.status === 404) {
        saveConversation();
        showError("The saved conversation is no longer on the server; this is a new one.");
      } else {
        showCopy();
        throw await errorFrom(response);
      }
    } else if (saved && Array.isArray(saved.messages)) {
      state.messages = saved.messages.filter((m) => m && typeof m.content === "string");
    }
    renderConversation();
  }

  function newConversation() {
    if (state.controller) state.controller.abort();
    state.conversationId = null;
    state.messages = [];
    saveConversation();
    hideError();
    renderConversation();
    ui.prompt.focus();
  }

  // A conversation on the server, created before its first message; null when history is off.
  async function ensureConversation(signal) {
    if (state.conversationId) return state.conversationId;
    // Turns already kept in this browser stay there: the server never saw them.
    if (state.history === "off" || state.messages.length) return null;
    const response = await request("history", { method: "POST", signal });
    if (response.status === 404) {
      state.history = "off";
      return null;
    }
    if (!response.ok) throw await errorFrom(response);
    const body = await response.json();
    state.history = "on";
    state.conversationId = body.conversation_id;
    saveConversation();
    return state.conversationId;
  }

  // ---- sending a message and streaming its reply ----
  function setBusy(busy) {
    ui.send.textContent = busy ? "Stop" : "Send";
    ui.send.classList.toggle("primary", !busy);
    ui.send.setAttribute("aria-label", busy ? "Stop the reply" : "Send the message");
    ui.provider.disabled = busy || state.models.size === 0;
    ui.model.disabled = busy || state.models.size === 0;
  }

  function fail(turn, text, err) {
    turn.reply.item.classList.add("failed");
    turn.user.item.classList.add("failed");
    turn.reply.bubble.setAttribute("aria-busy", "false");
    if (!turn.text) turn.reply.bubble.replaceChildren();
    turn.reply.bubble.appendChild(el("p", "note", err.message));
    if (err.status !== 401) showError(describe(err));
    // Not part of the conversation: the text goes back to the box, to send again.
    if (!ui.prompt.value) { ui.prompt.value = text; resizePrompt(); }
  }

  async function streamReply(turn, response) {
    let pending = false;
    const paint = () => {
      pending = false;
      const follow = nearBottom();
      renderMarkdown(turn.reply.bubble, turn.text);
      if (follow) scrollToEnd();
    };
    const events = serverEvents(response);
    for (;;) {
      let next;
      try {
        next = await events.next();
      } catch (err) {
        if (err && err.name === "AbortError") throw err;
        paint();
        throw new PageError("The connection broke during the reply (" + (err && err.message ? err.message : "network error") + ").");
      }
      if (next.done) break;
      const { event, data } = next.value;
      const payload = JSON.parse(data);
      if (event === "delta") {
        turn.text += payload.content || "";
        if (!pending) { pending = true; window.requestAnimationFrame(paint); }
      } else if (event === "done") {
        const messages = payload.messages || [];
        const last = messages[messages.length - 1];
        if (last && typeof last.content === "string") turn.text = last.content;
        paint();
        return payload;
      } else if (event === "error") {
        paint();
        throw new PageError(payload.error || "The reply failed.", { type: payload.type || "" });
      }
    }
    paint();
    throw new PageError("The connection closed before the reply was complete.");
  }

  async function send(text) {
    const provider = ui.provider.value;
    if (!provider) { showError("No provider to send to: the model list did not load."); return; }
    hideError();
    ui.prompt.value = "";
    resizePrompt();
    const turn = {
      text: "",
      user: addMessage("user", text),
      reply: addMessage("assistant", ""),
    };
    turn.reply.bubble.setAttribute("aria-busy", "true");
    showTyping(turn.reply.bubble);
    scrollToEnd();
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    try {
      const conversationId = await ensureConversation(controller.signal);
      const user = { role: "user", content: text };
      const body = { stream: true, messages: conversationId ? [user] : [...state.messages.map(({ role, content }) => ({ role, content })), user] };
      if (conversationId) body.conversation_id = conversationId;
      if (ui.model.value) body.model = ui.model.value;
      const response = await request(encodeURIComponent(provider) + "/", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) {
        const err = await errorFrom(response);
        if (response.status === 404 && err.param === "conversation_id") {
          // Deleted on the server meanwhile: the next message starts a new conversation.
          state.conversationId = null;
          saveConversation();
        }
        throw err;
      }
      const done = await streamReply(turn, response);
      const model = done.model ? provider + "/" + done.model : provider;
      turn.reply.meta.textContent = model;
      turn.reply.meta.hidden = false;
      turn.reply.bubble.setAttribute("aria-busy", "false");
      state.messages.push({ role: "user", content: text }, { role: "assistant", content: turn.text, model });
      saveConversation();
      updateStatus();
    } catch (err) {
      if (!turn.user.item.isConnected) {
        // "New conversation" cleared the page while this reply streamed: nothing to show.
      } else if (err && err.name === "AbortError") {
        fail(turn, text, new PageError("Stopped: this reply is not part of the conversation."));
        hideError();
      } else {
        fail(turn, text, err instanceof PageError ? err : new PageError(String(err && err.message ? err.message : err)));
      }
    } finally {
      if (state.controller === controller) state.controller = null;
      setBusy(false);
    }
  }

  // ---- the composer ----
  function resizePrompt() {
    ui.prompt.style.height = "auto";
    ui.prompt.style.height = ui.prompt.scrollHeight + "px";
  }

  function submit(event) {
    if (event) event.preventDefault();
    if (state.controller) { state.controller.abort(); return; }
    const text = ui.prompt.value.trim();
    if (!text) { ui.prompt.focus(); return; }
    send(text);
  }

  function onKeydown(event) {
    // Enter sends; Shift+Enter (and Enter while an input method composes) is a new line.
    // While a reply streams Enter does nothing: only the Stop button stops it.
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (!state.controller) submit();
  }

  async function start() {
    ui.composer.dataset.ready = "false";
    try {
      await loadModels();
      await restoreConversation();
    } catch (err) {
      if (err instanceof PageError) { if (err.status !== 401) showError(describe(err)); }
      else showError("The page could not start: " + (err && err.message ? err.message : String(err)));
    } finally {
      ui.composer.dataset.ready = "true";
    }
  }

  ui.composer.addEventListener("submit", submit);
  ui.prompt.addEventListener("keydown", onKeydown);
  ui.prompt.addEventListener("input", resizePrompt);
  ui.provider.addEventListener("change", () => { fillModels(); rememberChoice(); });
  ui.model.addEventListener("change", rememberChoice);
  ui.newConversation.addEventListener("click", newConversation);
  ui.keyForm.addEventListener("submit", useKey);
  ui.keyToggle.addEventListener("click", () => {
    ui.keyForm.hidden = !ui.keyForm.hidden;
    if (!ui.keyForm.hidden) ui.keyInput.focus();
  });
  ui.keyForget.addEventListener("click", () => {
    storage.set("apiKey", null);
    ui.keyInput.value = "";
    ui.keyInput.focus();
  });
  ui.errorClose.addEventListener("click", hideError);
  if (storage.get("apiKey")) ui.keyToggle.hidden = false;
  start();
})();
