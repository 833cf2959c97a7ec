// The language switch keeps a half-filled form (issue 18): before the page changes language,
// what was typed is kept in this tab's sessionStorage for the page it goes to, and put back
// there once — never a password, a hidden field, a file, or a field marked data-private (the
// HKID number: typed again rather than kept in the browser). The server already points the
// link at this page in the other language.
const KEY = "ecert-form:";
const sw = document.getElementById("lang-switch");
if (sw) {
  sw.addEventListener("click", () => {
    const kept = {};
    for (const el of document.querySelectorAll("main input, main textarea, main select")) {
      if (!el.id || el.dataset.private !== undefined) continue;
      if (["password", "hidden", "file", "submit", "button"].includes(el.type)) continue;
      kept[el.id] = el.type === "checkbox" || el.type === "radio" ? el.checked : el.value;
    }
    const to = new URL(sw.href, location.href);
    try {
      sessionStorage.setItem(KEY + to.pathname, JSON.stringify(kept));
    } catch (_) {
      // Storage refused (private mode, full): the switch still works, the form starts empty.
    }
  });
}
let kept = null;
try {
  kept = sessionStorage.getItem(KEY + location.pathname);
  sessionStorage.removeItem(KEY + location.pathname);
} catch (_) {}
if (kept) {
  for (const [id, value] of Object.entries(JSON.parse(kept))) {
    const el = document.getElementById(id);
    if (!el || el.dataset.private !== undefined) continue;
    if (typeof value === "boolean") el.checked = value;
    else if (!el.value) el.value = value;
  }
}
