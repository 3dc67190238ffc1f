// Filters by state and family: buttons toggle what is shown; a chain stays
// visible while any of its items is.
(function () {
  "use strict";
  const shown = { state: new Set(), family: new Set() };
  const cards = Array.from(document.querySelectorAll(".card"));
  const chains = Array.from(document.querySelectorAll(".chain"));
  const count = document.getElementById("shown-count");

  function apply() {
    let visible = 0;
    for (const card of cards) {
      const ok = (!shown.state.size || shown.state.has(card.dataset.state)) &&
        (!shown.family.size || shown.family.has(card.dataset.family));
      card.hidden = !ok;
      if (ok) visible += 1;
    }
    for (const chain of chains) {
      chain.hidden = !chain.querySelector(".card:not([hidden])");
    }
    if (count) count.textContent = String(visible);
  }

  for (const button of document.querySelectorAll(".filters button[data-filter]")) {
    button.addEventListener("click", function () {
      const group = shown[button.dataset.filter];
      const value = button.dataset.value;
      if (group.has(value)) group.delete(value); else group.add(value);
      button.setAttribute("aria-pressed", String(group.has(value)));
      apply();
    });
  }
  apply();
})();
