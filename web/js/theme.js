// Light or dark before the first paint (a classic script in <head>, so no flash): the person's
// choice (localStorage "mumu.theme": "light" | "dark"), else the system's (prefers-color-scheme,
// followed by the stylesheet while no choice is stored).  app.js has the toggle.
(function () {
  try {
    var theme = localStorage.getItem("mumu.theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch (e) {
    // storage refused (private mode): the system's choice
  }
})();
