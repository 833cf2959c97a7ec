// The language switch keeps a half-filled form (issue 18): before the page changes language,
// the fields marked data-keep (names, mailbox, choices of outlet and profile — never an
// identity number, a date of birth, a phone, an address, a code, a password or an attestation)
// are kept in this tab's sessionStorage for the page the switch goes to, and put back there
// once. Whatever is kept is removed at the next page this tab loads, used or not, and is
// never used after two minutes. The server already points the link at this page in the other
// language.
const KEY = "ecert-form";
const MAX_AGE_MS = 120000;
const sw = document.getElementById("lang-switch");
if (sw) {
  sw.addEventListener("click", () => {
    const fields = {};
    for (const el of document.querySelectorAll("main [data-keep]")) {
      if (!el.id || ["password", "hidden", "file"].includes(el.type)) continue;
      fields[el.id] = el.type === "checkbox" || el.type === "radio" ? el.checked : el.value;
    }
    const to = new URL(sw.href, location.href);
    try {
      sessionStorage.setItem(KEY, JSON.stringify({ path: to.pathname, at: Date.now(), fields }));
    } catch (_) {
      // Storage refused (private mode, full): the switch still works, the form starts empty.
    }
  });
}
let kept = null;
try {
  kept = JSON.parse(sessionStorage.getItem(KEY) || "null");
  sessionStorage.removeItem(KEY);
} catch (_) {}
if (kept && kept.path === location.pathname && Date.now() - kept.at < MAX_AGE_MS) {
  for (const [id, value] of Object.entries(kept.fields || {})) {
    const el = document.getElementById(id);
    if (!el || el.dataset.keep === undefined) continue;
    if (typeof value === "boolean") el.checked = value;
    else if (!el.value) el.value = value;
  }
}
