// covidscan annotate: the JSON API call every page uses (same-origin cookie + the session's CSRF token).
"use strict";
window.covidscanApi = function (csrf) {
  return async function api(method, url, body) {
    const r = await fetch(url, { method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: body ? JSON.stringify(body) : undefined });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.detail || r.statusText);
    return data;
  };
};
