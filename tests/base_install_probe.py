"""`--dry_run` of every command's flagfile under `configs/` (not the `*_recipe.flags` they include), in one
process: a test starts it where the optional packages cannot be imported (what README's first command
installs), and reads one `ok <flagfile>` line per plan.

Usage: python base_install_probe.py  (in a directory holding `configs/`, as flagfiles name the ones they include)
"""

import contextlib
import glob
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

import run  # noqa: E402, F401 (defines the flags)
from kd_tf.repro import config, modes  # noqa: E402

for path in sorted(glob.glob(os.path.join("configs", "*.flags"))):
    if path.endswith("_recipe.flags"):
        continue
    argv = ["run.py", f"--flagfile={path}", "--dry_run"]
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        modes.run(config.from_flags(flags.FLAGS, argv))
    plan = printed.getvalue()
    if not (plan.startswith("Plan (--dry_run") and "runtime:" in plan and "output: " in plan):
        raise SystemExit(f"{path}: no plan printed:\n{plan}")
    print("ok", os.path.basename(path), flush=True)
print(
    "imported optional:",
    sorted(name for name in ("sklearn", "pytest", "xdist", "ruff") if name in sys.modules),
)
