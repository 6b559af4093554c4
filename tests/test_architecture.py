"""The engine must run without the UI: no bridge module may pull in Textual."""

import pkgutil
import subprocess
import sys

import bridge


def test_no_bridge_module_imports_textual():
    modules = [f"bridge.{m.name}" for m in pkgutil.iter_modules(bridge.__path__)]
    assert "bridge.engine" in modules and "bridge.receiver" in modules
    for module in modules:
        code = f"import sys, {module}; sys.exit(1 if any(m.split('.')[0] == 'textual' for m in sys.modules) else 0)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{module} imports textual (or fails): {result.stderr}"
