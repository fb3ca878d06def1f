// Renders the maths with the bundled KaTeX: the pages' (pymdownx.arithmatex, generic mode)
// and the notebooks' ($...$ in their markdown cells). Material's instant navigation is off,
// so a page load is one DOMContentLoaded.
document.addEventListener("DOMContentLoaded", function () {
  var options = {
    delimiters: [
      { left: "$$", right: "$$", display: true },
      { left: "\\[", right: "\\]", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\(", right: "\\)", display: false },
    ],
    ignoredClasses: ["highlight", "highlight-ipynb", "jp-OutputArea"],
    throwOnError: false,
  };
  document.querySelectorAll(".arithmatex").forEach(function (el) {
    renderMathInElement(el, options);
  });
  document.querySelectorAll(".jp-MarkdownOutput").forEach(function (el) {
    renderMathInElement(el, options);
  });
});
