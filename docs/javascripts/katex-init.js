// Render the mathematics with KaTeX, which `npm ci` installs and the site serves (assets/katex/): no network.
// Markdown pages: pymdownx.arithmatex (generic) wraps each formula in .arithmatex as \( \) or \[ \].
// Notebook pages (mkdocs-jupyter): markdown cells, LaTeX outputs and the table of contents keep $ $ and $$ $$.
(function () {
  const paren = [
    { left: "\\[", right: "\\]", display: true },
    { left: "\\(", right: "\\)", display: false },
  ];
  const dollars = [
    { left: "$$", right: "$$", display: true },
    { left: "$", right: "$", display: false },
    ...paren,
  ];
  function render() {
    const notebook = document.querySelector(".jupyter-wrapper") !== null;
    // The formulas of the page, and the headings repeated as text in the navigation (table of contents).
    for (const el of document.querySelectorAll(".arithmatex, .md-sidebar")) {
      renderMathInElement(el, { delimiters: notebook ? dollars : paren, throwOnError: false });
    }
    // Notebook cells: code is in pre (skipped); .clipboard-copy-txt is the hidden text of a copy button.
    for (const el of document.querySelectorAll(".jupyter-wrapper")) {
      renderMathInElement(el, { delimiters: dollars, throwOnError: false, ignoredClasses: ["clipboard-copy-txt"] });
    }
  }
  // mkdocs-material's document$ emits on every page load (also with instant navigation).
  if (window.document$) window.document$.subscribe(render);
  else document.addEventListener("DOMContentLoaded", render);
})();
