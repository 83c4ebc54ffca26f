// Render the mathematics with KaTeX, which `npm ci` installs and the site serves (assets/katex/): no network.
// Markdown pages: pymdownx.arithmatex (generic) wraps each formula in .arithmatex as \( \) or \[ \].
// Notebook pages (mkdocs-jupyter): markdown cells and LaTeX outputs keep $ $ and $$ $$.
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
    for (const el of document.querySelectorAll(".arithmatex")) {
      renderMathInElement(el, { delimiters: paren, throwOnError: false });
    }
    for (const el of document.querySelectorAll(".jupyter-wrapper")) {
      renderMathInElement(el, { delimiters: dollars, throwOnError: false });  // code is in pre: skipped
    }
  }
  // mkdocs-material's document$ emits on every page load (also with instant navigation).
  if (window.document$) window.document$.subscribe(render);
  else document.addEventListener("DOMContentLoaded", render);
})();
