// agentkeys local passkey page: runs one WebAuthn ceremony and posts the result back.
// Served by agentkeys.passkey_page under a one-time path; fetches go to relative URLs only.
"use strict";

(function () {
  const purposeEl = document.getElementById("purpose");
  const statusEl = document.getElementById("status");
  const detailsEl = document.getElementById("details");

  function fromB64url(text) {
    let b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function toB64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let bin = "";
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // What is approved, as text nodes only: a label or service name is never parsed as HTML.
  function showDetails(details) {
    (Array.isArray(details) ? details : []).forEach(function (pair) {
      const name = document.createElement("dt");
      name.textContent = String(pair[0]);
      const value = document.createElement("dd");
      value.textContent = String(pair[1]);
      detailsEl.appendChild(name);
      detailsEl.appendChild(value);
    });
  }

  function show(text, kind) {
    statusEl.textContent = text;
    statusEl.className = kind || "";
  }

  function creationOptions(o) {
    return {
      rp: o.rp,
      user: { id: fromB64url(o.user.id), name: o.user.name, displayName: o.user.displayName },
      challenge: fromB64url(o.challenge),
      pubKeyCredParams: o.pubKeyCredParams,
      timeout: o.timeout,
      attestation: o.attestation || "none",
      authenticatorSelection: o.authenticatorSelection,
      excludeCredentials: (o.excludeCredentials || []).map(function (c) {
        return { type: c.type, id: fromB64url(c.id), transports: c.transports };
      }),
    };
  }

  function requestOptions(o) {
    return {
      rpId: o.rpId,
      challenge: fromB64url(o.challenge),
      timeout: o.timeout,
      userVerification: o.userVerification || "required",
      allowCredentials: (o.allowCredentials || []).map(function (c) {
        return { type: c.type, id: fromB64url(c.id), transports: c.transports };
      }),
    };
  }

  function credentialJson(kind, cred) {
    const r = cred.response;
    const response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (kind === "create") {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) response.userHandle = toB64url(r.userHandle);
    }
    return {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: response,
      clientExtensionResults: {},
      authenticatorAttachment: cred.authenticatorAttachment || null,
    };
  }

  async function post(body) {
    const answer = await fetch("result", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
    });
    return answer.ok;
  }

  async function run() {
    let request;
    try {
      const answer = await fetch("request", { cache: "no-store" });
      if (!answer.ok) throw new Error("this page has expired or was already used");
      request = await answer.json();
    } catch (err) {
      show("Cannot load the request: " + err.message, "error");
      return;
    }
    purposeEl.textContent = request.purpose;
    showDetails(request.details);
    show(request.kind === "create" ? "Creating your passkey…" : "Waiting for your passkey…");
    let body;
    try {
      const cred = request.kind === "create"
        ? await navigator.credentials.create({ publicKey: creationOptions(request.publicKey) })
        : await navigator.credentials.get({ publicKey: requestOptions(request.publicKey) });
      body = { ok: true, credential: credentialJson(request.kind, cred) };
    } catch (err) {
      const name = err && err.name ? String(err.name) : "Error";
      show("The passkey step failed (" + name + "). Go back to the terminal.", "error");
      try { await post({ ok: false, error: name }); } catch (ignored) { /* CLI times out */ }
      return;
    }
    try {
      if (!(await post(body))) throw new Error("rejected");
      show("Done. You can close this tab and return to the terminal.", "ok");
    } catch (err) {
      show("Could not hand the result to the command line; go back to the terminal.", "error");
    }
  }

  run();
})();
