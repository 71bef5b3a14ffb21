"""What serving and training share: file formats and helpers that depend on nothing else here.

Modules in `bot.shared` import only the standard library, third-party packages and each other;
`training/` may import them (and the serving core in `retrieval/`), while `bot/` and
`retrieval/` never import `training/`. See docs/architecture.md.
"""

from __future__ import annotations
