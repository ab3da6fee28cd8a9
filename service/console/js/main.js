// The console's entry point: the API key field, the tabs, and the three panels.

import { apiKey, setApiKey } from "./api.js";
import { setupCompare } from "./compare.js";
import { setupServer } from "./server.js";
import { setupTry } from "./try.js";

const TABS = ["try", "compare", "server"];

function showTab() {
  const wanted = location.hash.slice(1);
  const tab = TABS.includes(wanted) ? wanted : "try";
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.dataset.tab !== tab;
  for (const link of document.querySelectorAll("nav.tabs a")) link.setAttribute("aria-selected", String(link.dataset.tab === tab));
  // Charts drawn while hidden had no size: redraw them now that they are laid out.
  window.dispatchEvent(new Event("resize"));
}

function setupKey() {
  const form = document.getElementById("key-form");
  const field = document.getElementById("api-key");
  field.value = apiKey();
  form.classList.toggle("set", Boolean(field.value));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(field.value.trim());
    form.classList.toggle("set", Boolean(field.value.trim()));
    // Everything shown so far may have been refused: start again with the key.
    location.reload();
  });
  document.getElementById("api-key-clear").addEventListener("click", () => {
    setApiKey("");
    location.reload();
  });
}

async function main() {
  setupKey();
  window.addEventListener("hashchange", showTab);
  showTab();
  setupServer();
  await Promise.all([setupTry(), setupCompare()]);
  document.body.dataset.ready = "true";
}

main();
