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


def test_no_bridge_module_imports_the_ui():
    """bridge/ never names tui/: the command that plugs the UI in is the top-level dicombridge.py."""
    import ast
    from pathlib import Path

    offenders = []
    for path in sorted(Path(bridge.__path__[0]).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "tui"]
    assert offenders == []


UI_MAY_IMPORT = {"bridge.session", "bridge.events", "bridge.settings", "bridge.settings_doc"}


def test_the_ui_reaches_the_engine_only_through_the_session():
    """Every tui/ module imports from bridge/ only the session, events and settings (issue 17, item 5)."""
    import ast
    from pathlib import Path

    import tui

    modules = sorted(Path(tui.__path__[0]).glob("*.py"))
    assert any(path.name == "settings_screen.py" for path in modules)
    offenders = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.name}: {name}" for name in names
                          if name.split(".")[0] == "bridge" and name not in UI_MAY_IMPORT]
    assert offenders == []
