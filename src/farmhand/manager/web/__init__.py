"""The web UI: server-rendered pages that are clients of the JSON API.

`routes` serves the pages (`/`, `/login`, `/jobs/{id}`, `/submit`, `/runners`,
`/account`) and `/static/`; `thumbnails` adds the frame-thumbnail API route the job page
uses. Everything is in the package (templates, CSS, one JavaScript file): no build
step, no network.
"""
