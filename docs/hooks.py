"""MkDocs hook: the site is docs/ plus the repository's own Markdown files that live elsewhere (the
README, the language reference, the examples' READMEs), each text kept once, where it sits.

Links are written as they resolve in the repository (from docs/x.md, the language reference is
``../spec/README.md``), so they work where the file sits; here each is rewritten to the page it
became. A link to another file of the repository (source, a test) must name a file that exists
(else a warning, which ``mkdocs build --strict`` turns into a failure) and becomes its plain text,
since the site serves no source.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.plugins.theorycraft")

ROOT = Path(__file__).resolve().parent.parent
DOCS = "docs/"
INCLUDED = {  # repository path -> page on the site
    "README.md": "index.md",
    "spec/README.md": "language.md",
    "examples/README.md": "examples.md",
    "examples/rasp/README.md": "examples-rasp.md",
}
# [text](target) or ![alt](target), with an optional "title"; code spans and fences are skipped below
LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)


def on_files(files, config):
    for repo_path, page in INCLUDED.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / repo_path)))
    return files


def _repo_path(page_uri: str) -> str:
    """The repository path of a page on the site."""
    for repo_path, page in INCLUDED.items():
        if page == page_uri:
            return repo_path
    return DOCS + page_uri


def _site_uri(repo_path: str) -> str | None:
    """The page a repository file became on the site, or None for a file outside it."""
    if repo_path.startswith(DOCS):
        return repo_path[len(DOCS):]
    return INCLUDED.get(repo_path)


def rewrite(markdown: str, page_uri: str) -> str:
    """Every relative link of a page, as it resolves in the repository, pointed at its page on the site."""
    here = posixpath.dirname(_repo_path(page_uri))
    site_here = posixpath.dirname(page_uri)

    def one(match: re.Match) -> str:
        bang, text, target, title = match.group(1), match.group(2), match.group(3), match.group(4) or ""
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(here, path))
        site = _site_uri(resolved)
        if site is None:
            if not (ROOT / resolved).exists():
                log.warning("%s: the link '%s' names %s, which is not in the repository", page_uri, target, resolved)
            return text  # a file the site does not serve: its name stays, as text
        new = posixpath.relpath(site, site_here or ".") + (f"#{anchor}" if anchor else "")
        return f"{bang}[{text}]({new}{title})"

    code: list[str] = []  # code is left as it is: hidden behind placeholders while links are rewritten

    def hide(match: re.Match) -> str:
        code.append(match.group(0))
        return f"\0{len(code) - 1}\0"

    rewritten = LINK.sub(one, CODE.sub(hide, markdown))
    return re.sub("\0(\\d+)\0", lambda m: code[int(m.group(1))], rewritten)


def on_page_markdown(markdown, page, config, files):
    return rewrite(markdown, page.file.src_uri)
