"""Stand-ins for real engines, for tests and demos without GPUs.

``STANDIN_COMMAND`` runs the OpenAI-compatible stand-in server as a script: it imports nothing
from servetune, so it starts in a fraction of the time ``-m engines.standin.openai_server``
takes (that form imports the whole ``engines`` package first). ``STANDIN_MODULE_COMMAND`` is the
documented form, for ``ctx.options["server_command"]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

STANDIN_SCRIPT = Path(__file__).with_name("openai_server.py")
STANDIN_COMMAND = [sys.executable, str(STANDIN_SCRIPT)]
STANDIN_MODULE_COMMAND = [sys.executable, "-m", "engines.standin.openai_server"]
REPO_ROOT = STANDIN_SCRIPT.parents[2]
