"""Build hooks of the documentation site (mkdocs.yml names this file).

* The tutorial notebooks (``notebooks/*.ipynb``) and the committed results
  (``results/*.png``, ``*.json`` and the ``*.md`` reports) enter the site from where they
  are in the repository, at ``notebooks/`` and ``results/``: no copy of them is kept in git.
  The notebooks are added before mkdocs-jupyter renders them (with their committed outputs).
* Each notebook page starts with a link that downloads the notebook (mkdocs-jupyter's
  ``include_source`` puts it next to the page) and says how to run it.
* The notebook pages lose the scripts that nbconvert's template loads from the network
  (MathJax, mermaid): the site bundles KaTeX, which renders the notebooks' ``$...$`` maths.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

# Files taken from the repository into the site, by folder and pattern.
REPOSITORY_FILES = (
    ("notebooks", "*.ipynb"),
    ("results", "*.png"),
    ("results", "*.json"),
    ("results", "*.md"),
)

_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>")
_REMOTE_MODULE = re.compile(
    r"<script type=\"module\">(?:(?!</script>).)*https?://(?:(?!</script>).)*</script>", re.S
)


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


@event_priority(100)  # before mkdocs-jupyter turns the notebooks into pages
def on_files(files: Files, config) -> Files:
    root = _root(config)
    for folder, pattern in REPOSITORY_FILES:
        for path in sorted((root / folder).glob(pattern)):
            uri = f"{folder}/{path.name}"
            if files.get_file_from_path(uri) is not None:
                raise ValueError(f"docs/{uri} hides the repository's {uri}: rename one")
            files.append(
                File(
                    uri,
                    src_dir=str(root),
                    dest_dir=config.site_dir,
                    use_directory_urls=config.use_directory_urls,
                )
            )
    return files


_DOWNLOAD = (
    '<p class="nb-download"><a href="{name}" download>Download this notebook</a> (with its '
    'outputs), or run it from a clone: <code>.venv/bin/pip install -e ".[notebooks]"</code>, '
    "and open <code>notebooks/{name}</code> in Jupyter (its source is "
    "<code>notebooks/src/{stem}.py</code>).</p>\n"
)


def on_page_content(html: str, page, config, files) -> str:
    if page.file.src_uri.endswith(".ipynb"):
        html = _REMOTE_MODULE.sub("", _REMOTE_SCRIPT.sub("", html))
        name = Path(page.file.src_uri).name
        html = _DOWNLOAD.format(name=name, stem=Path(name).stem) + html
    return html
