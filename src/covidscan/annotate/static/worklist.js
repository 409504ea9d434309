// covidscan annotate: the worklist (reader, senior) and the administration page (admin).
"use strict";
(function () {
  const app = document.getElementById("app");
  const csrf = app.dataset.csrf;
  const role = app.dataset.role;

  const api = window.covidscanApi(csrf);
  function cell(tr, text) { const td = document.createElement("td"); td.textContent = text == null ? "" : String(text); tr.appendChild(td); return td; }

  async function loadCases() {
    const order = document.getElementById("order");
    const url = role === "senior" ? "/api/adjudication" : "/api/worklist?order=" + (order ? order.value : "default");
    const data = await api("GET", url);
    const body = document.querySelector("#cases tbody");
    body.textContent = "";
    for (const c of data.cases) {
      const tr = document.createElement("tr");
      tr.dataset.record = c.record_id;
      cell(tr, c.record_id); cell(tr, c.modality); cell(tr, c.n_slices);
      cell(tr, c.status + (c.reasons && c.reasons.length ? " (" + c.reasons.join(", ") + ")" : "") +
        (c.uncertainty != null ? " - uncertainty " + c.uncertainty.toFixed(2) : ""));
      const a = document.createElement("a");
      a.href = "/case/" + encodeURIComponent(c.record_id);
      a.textContent = role === "senior" ? "adjudicate" : "open";
      cell(tr, "").appendChild(a);
      body.appendChild(tr);
    }
  }

  async function loadAdmin() {
    const users = await api("GET", "/api/admin/users");
    const ub = document.querySelector("#users tbody"); ub.textContent = "";
    for (const u of users.users) { const tr = document.createElement("tr"); [u.username, u.role, u.slot, u.reads_as, u.locked ? "yes" : ""].forEach((v) => cell(tr, v)); ub.appendChild(tr); }
    const log = await api("GET", "/api/admin/audit?limit=200");
    const ab = document.querySelector("#audit tbody"); ab.textContent = "";
    for (const e of log.entries) { const tr = document.createElement("tr"); [e.at, e.user, e.action, e.record_id, e.detail].forEach((v) => cell(tr, v)); ab.appendChild(tr); }
  }

  if (role === "admin") {
    loadAdmin();
    document.getElementById("new-user").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(ev.target);
      const body = {}; for (const [k, v] of f.entries()) body[k] = v === "" ? null : v;
      try { await api("POST", "/api/admin/users", body); ev.target.reset(); loadAdmin(); } catch (e) { alert(e.message); }
    });
    document.getElementById("export").addEventListener("click", async () => {
      try { document.getElementById("export-result").textContent = JSON.stringify(await api("POST", "/api/admin/export"), null, 2); loadAdmin(); }
      catch (e) { document.getElementById("export-result").textContent = e.message; }
    });
  } else {
    loadCases();
    const order = document.getElementById("order");
    if (order) order.addEventListener("change", loadCases);
  }
})();
